/** HTML helpers and the console's one stylesheet and script, served from the package (no CDN). */

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

export const iso = (t: number): string => new Date(t).toISOString().replace(".000Z", "Z");

export interface Layout {
  readonly title: string;
  readonly active: "customer" | "audit" | "health" | "";
  /** Who is signed in; undefined on the login page. */
  readonly principal?: string;
  /** Shown on every page when the console runs without authentication. */
  readonly warning?: string;
}

export function page(l: Layout, body: string): string {
  const nav = (href: string, key: Layout["active"], text: string): string => `<a href="${href}"${l.active === key ? ' class="active"' : ""}>${text}</a>`;
  const who =
    l.principal === undefined
      ? ""
      : `<span class="who">${esc(l.principal)}</span><form method="post" action="/console/logout" class="inline"><button type="submit">Sign out</button></form>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(l.title)} · proofgate console</title><link rel="stylesheet" href="/console/assets/console.css"><script src="/console/assets/console.js" defer></script></head>
<body><header><strong>proofgate</strong>${l.principal === undefined ? "" : `<nav>${nav("/console/customer", "customer", "Customer")}${nav("/console/audit", "audit", "Audit")}${nav("/console/health", "health", "Health")}</nav>`}<span class="spacer"></span>${who}</header>
${l.warning ? `<p class="warning" id="auth-warning">${esc(l.warning)}</p>` : ""}<main>${body}</main></body></html>`;
}

export const CSS = `
:root { --fg:#1d2430; --muted:#5b6675; --line:#d7dce3; --bg:#f6f7f9; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); }
body { margin:0; background:var(--bg); }
header { display:flex; gap:18px; align-items:center; padding:8px 16px; background:#1d2430; color:#fff; }
header a { color:#cfd6e0; text-decoration:none; padding:4px 8px; border-radius:4px; }
header a.active, header a:hover { background:#3a4657; color:#fff; }
header nav { display:flex; gap:4px; } .spacer { flex:1; } .who { color:#cfd6e0; }
form.inline { display:inline; } button { cursor:pointer; }
main { padding:16px; } h1 { font-size:20px; margin:0 0 12px; } h2 { font-size:16px; margin:20px 0 8px; }
.warning { margin:0; padding:8px 16px; background:#fff3cd; border-bottom:1px solid #e0c36a; }
.error { color:#a40000; } .muted { color:var(--muted); } .ok { color:#11772d; } .bad { color:#a40000; font-weight:600; }
table { border-collapse:collapse; background:#fff; } th, td { border:1px solid var(--line); padding:3px 8px; text-align:left; vertical-align:top; }
th { background:#eef1f5; } td.num { text-align:right; font-variant-numeric: tabular-nums; } code, .mono { font-family: ui-monospace, monospace; font-size:12px; }
.cards { display:flex; gap:12px; flex-wrap:wrap; } .card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px 14px; min-width:150px; }
.card .v { font-size:22px; font-weight:600; } .filters { display:flex; gap:8px; flex-wrap:wrap; align-items:end; margin-bottom:10px; }
.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
.layout { display:flex; gap:16px; align-items:flex-start; flex-wrap:wrap; } .side { min-width:560px; flex:1; }
#details { background:#fff; border:1px solid var(--line); border-radius:6px; padding:8px 12px; min-height:40px; margin-top:8px; max-width:1100px; }
#details dt { font-weight:600; float:left; clear:left; width:110px; } #details dd { margin-left:120px; }
svg.timeline { background:#fff; border:1px solid var(--line); }
.lane-bg { fill:#fafbfc; stroke:#eef0f3; } .lane-label, .tick-label { font-size:11px; fill:var(--muted); } .band-title { font-size:12px; font-weight:600; fill:var(--fg); }
.tick { stroke:#eceff3; } .now { stroke:#d0021b; stroke-width:1.5; stroke-dasharray:4 3; }
.span { stroke:#fff; cursor:pointer; } .span-intent { fill:#9db7dd; } .span-trial { fill:#c7b3e6; } .span-canceled { fill:#b9bec6; }
.span-paid { fill:#3f9b5a; } .span-revoked { fill:#c0392b; } .span-in-flight { fill:#f0ad4e; } .span-retry { fill:#f7d58b; }
.span-override-grant { fill:#58b368; } .span-override-deny { fill:#222; }
.mark path { fill:#1d2430; stroke:#fff; stroke-width:1; cursor:pointer; } .mark:hover path, .mark.selected path { fill:#d0021b; }
.mark-succeeded path { fill:#2d7a45; } .mark-failed path, .mark-exhausted path, .mark-refunded path, .mark-dispute-lost path { fill:#b0281a; }
.mark-requires-action path, .mark-processing path { fill:#d9891a; } .mark-dispute-opened path { fill:#7b2d8b; }
.seg { cursor:pointer; stroke:#fff; stroke-width:0.5; } .seg.selected { stroke:#d0021b; stroke-width:2; }
.status-granted { fill:#2e9e4f; } .status-grace-period { fill:#9fd36b; } .status-payment-pending { fill:#f0ad4e; } .status-payment-required { fill:#e8743b; }
.status-suspended { fill:#c0392b; } .status-revoked { fill:#7d1a12; } .status-canceled { fill:#8c96a3; } .status-expired { fill:#5f6b7a; }
.status-blocked { fill:#111; } .status-not-entitled { fill:#dfe3e8; } .status-unknown-customer { fill:#ffffff; }
.legend { display:flex; gap:10px; flex-wrap:wrap; font-size:12px; margin:6px 0; } .legend span { display:inline-flex; align-items:center; gap:4px; }
.legend svg { width:12px; height:12px; }
.allowed { color:#11772d; font-weight:600; } .denied { color:#a40000; font-weight:600; }
.pager { margin:10px 0; display:flex; gap:12px; align-items:center; }
`;

/** Click or keyboard-select a mark or segment: its details appear in #details. */
export const JS = `
(function () {
  var details = document.getElementById("details");
  if (!details) return;
  var selected = null;
  function show(el) {
    var data;
    try { data = JSON.parse(el.getAttribute("data-info") || "{}"); } catch (e) { return; }
    if (selected) selected.classList.remove("selected");
    selected = el; el.classList.add("selected");
    var dl = document.createElement("dl");
    Object.keys(data).forEach(function (k) {
      if (!data[k]) return;
      var dt = document.createElement("dt"); dt.textContent = k;
      var dd = document.createElement("dd"); dd.textContent = data[k];
      dl.appendChild(dt); dl.appendChild(dd);
    });
    details.replaceChildren(dl);
  }
  document.querySelectorAll("svg.timeline [data-info]").forEach(function (el) {
    el.addEventListener("click", function () { show(el); });
    el.addEventListener("mouseenter", function () { show(el); });
    el.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") show(el); });
  });
})();
`;
