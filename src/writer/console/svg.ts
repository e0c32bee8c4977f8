import { esc } from "./html.js";
import { LANES, type Mark, type Timeline } from "./timeline.js";

/**
 * The timeline as inline SVG: one band per subscription (a row per lane), the overrides, then one
 * row per feature coloured by its status. Colours come from classes (console.css), so the
 * legend and the picture cannot disagree. Every mark and segment carries its details in
 * `data-info` (shown on click by console.js) and a `<title>` (the browser's hover tooltip).
 */

const WIDTH = 1100;
const LABEL = 190;
const PLOT = WIDTH - LABEL - 10;
const ROW = 18;
const GAP = 10;
const AXIS = 28;

const LANE_LABEL: Record<string, string> = {
  intent: "intent",
  paid: "paid coverage",
  "in-flight": "in flight",
  recovery: "recovery",
  refund: "refunds, disputes",
};

const iso = (t: number): string => new Date(t).toISOString().replace(".000Z", "Z").replace("T", " ");
const cls = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, "-");

export function timelineSvg(t: Timeline): string {
  const span = t.endMs - t.startMs;
  const x = (ms: number): number => LABEL + (Math.min(Math.max(ms, t.startMs), t.endMs) - t.startMs) * (PLOT / span);
  const w = (from: number, to: number): number => Math.max(1, x(to) - x(from));
  const visible = (from: number, to: number): boolean => to >= t.startMs && from <= t.endMs;
  const out: string[] = [];
  let y = AXIS;

  const info = (o: Readonly<Record<string, string>>): string => esc(JSON.stringify(o));
  const rect = (klass: string, from: number, to: number, top: number, h: number, title: string, data: Record<string, string>, attrs = ""): void => {
    if (!visible(from, to)) return;
    out.push(
      `<rect class="${klass}" x="${x(from).toFixed(1)}" y="${top}" width="${w(from, to).toFixed(1)}" height="${h}" data-from="${from}" data-to="${to}" data-info="${info(data)}"${attrs}><title>${esc(title)}</title></rect>`,
    );
  };
  const mark = (m: Mark, top: number): void => {
    if (!visible(m.atMs, m.atMs)) return;
    const cx = x(m.atMs).toFixed(1);
    const cy = top + ROW / 2;
    out.push(
      `<g class="mark mark-${cls(m.kind)}" data-lane="${esc(m.lane)}" data-at="${m.atMs}" data-kind="${esc(m.kind)}" data-info="${info(m.info)}" tabindex="0"><title>${esc(`${iso(m.atMs)} ${m.label}`)}</title><path d="M${cx} ${cy - 6} l6 6 l-6 6 l-6 -6 z"/></g>`,
    );
  };
  const label = (text: string, top: number, klass = "lane-label"): void => {
    out.push(`<text class="${klass}" x="${LABEL - 6}" y="${top + ROW / 2 + 4}" text-anchor="end">${esc(text)}</text>`);
  };

  for (const b of t.bands) {
    out.push(`<g class="band" data-subscription="${esc(b.subscriptionId)}">`);
    out.push(`<text class="band-title" x="4" y="${y + 12}">${esc(b.subscriptionId || "(no subscription)")}</text>`);
    y += ROW;
    for (const lane of LANES) {
      out.push(`<rect class="lane-bg" x="${LABEL}" y="${y}" width="${PLOT}" height="${ROW}"/>`);
      label(LANE_LABEL[lane] ?? lane, y);
      for (const s of b.spans.filter((s) => s.lane === lane))
        rect(`span span-${s.kind}`, s.fromMs, s.toMs, y + 2, ROW - 4, `${s.label} (${iso(s.fromMs)} .. ${iso(s.toMs)})`, { what: s.label, from: iso(s.fromMs), to: iso(s.toMs) }, ` data-lane="${lane}" data-kind="${s.kind}"`);
      for (const m of b.marks.filter((m) => m.lane === lane)) mark(m, y);
      y += ROW;
    }
    out.push("</g>");
    y += GAP;
  }

  if (t.overrides.length > 0) {
    out.push(`<g class="band band-overrides"><text class="band-title" x="4" y="${y + 12}">overrides</text>`);
    y += ROW;
    for (const o of t.overrides) {
      out.push(`<rect class="lane-bg" x="${LABEL}" y="${y}" width="${PLOT}" height="${ROW}"/>`);
      label(`${o.effect} ${o.feature}`, y);
      rect(`span span-override-${o.effect.toLowerCase()}`, o.fromMs, o.toMs, y + 2, ROW - 4, `${o.overrideId}: ${o.effect} ${o.feature} by ${o.info["actor"] ?? ""}: ${o.info["reason"] ?? ""}`, o.info, ` data-kind="override"`);
      y += ROW;
    }
    out.push("</g>");
    y += GAP;
  }

  if (t.features.length > 0) {
    out.push(`<g class="features"><text class="band-title" x="4" y="${y + 12}">access by feature</text>`);
    y += ROW;
    for (const f of t.features) {
      out.push(`<g class="feature" data-feature="${esc(f.feature)}">`);
      label(f.feature, y);
      for (const s of f.segments)
        rect(`seg status-${cls(s.status)}`, s.fromMs, s.toMs, y + 1, ROW - 2, `${f.feature}: ${s.status} from ${iso(s.fromMs)}: ${s.reason}`, { feature: f.feature, status: s.status, from: iso(s.fromMs), to: iso(s.toMs), rule: s.reason }, ` data-status="${esc(s.status)}"`);
      out.push("</g>");
      y += ROW;
    }
    out.push("</g>");
  }

  // Axis on top, now line over everything.
  const ticks: string[] = [];
  for (let i = 0; i <= 5; i++) {
    const at = t.startMs + (span * i) / 5;
    const tx = x(at);
    ticks.push(`<line class="tick" x1="${tx.toFixed(1)}" y1="${AXIS - 6}" x2="${tx.toFixed(1)}" y2="${y}"/>`);
    ticks.push(`<text class="tick-label" x="${tx.toFixed(1)}" y="${AXIS - 10}" text-anchor="${i === 0 ? "start" : i === 5 ? "end" : "middle"}">${esc(iso(Math.round(at)).slice(0, span < 86_400_000 ? 19 : 16))}</text>`);
  }
  const now = t.nowMs >= t.startMs && t.nowMs <= t.endMs ? `<line class="now" x1="${x(t.nowMs).toFixed(1)}" y1="${AXIS - 6}" x2="${x(t.nowMs).toFixed(1)}" y2="${y}"><title>now ${esc(iso(t.nowMs))}</title></line>` : "";
  return `<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y + 6}" viewBox="0 0 ${WIDTH} ${y + 6}" data-start="${t.startMs}" data-end="${t.endMs}" role="img" aria-label="access timeline">${ticks.join("")}${out.join("")}${now}</svg>`;
}
