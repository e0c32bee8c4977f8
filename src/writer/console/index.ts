import type { IncomingMessage, ServerResponse } from "node:http";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import type { JetStreamManager } from "nats";
import { AuditEntry, AuditKind } from "../../gen/proofgate/v1/admin.js";
import { DeadLetter } from "../../gen/proofgate/v1/document.js";
import { errorMessage, InvalidArgumentError, NotFoundError } from "../../errors/index.js";
import { statusName } from "../../policy/index.js";
import { customerToken, DEADLETTER_STREAM } from "../../replication/subjects.js";
import type { RouteHandler } from "../../transport/http.js";
import type { AdminOperations } from "../admin/service.js";
import type { WriterCore } from "../core.js";
import { CSS, esc, iso, JS, page } from "./html.js";
import { bearerToken, cookieValue, COOKIE, isLoopback, MAX_TOKEN_CHARS, Sessions, type ConsolePrincipal, type TokenAuthenticator } from "./session.js";
import type { SidecarDirectory } from "./sidecars.js";
import { timelineSvg } from "./svg.js";
import { buildTimeline, MAX_INSTANTS, STATUS_ORDER } from "./timeline.js";

export { SidecarDirectory } from "./sidecars.js";
export type { ConsolePrincipal, TokenAuthenticator } from "./session.js";

/** The audit chain's verification result (src/auth's verifier has this shape). */
export type AuditVerification = { ok: true; entries: number } | { ok: false; firstBadId: number; reason: string };

/**
 * What the console takes from the writer's authentication, each optional so the writer can run
 * the console before (or without) it: wire the real ones in one line each.
 */
export interface ConsoleAuth {
  /** The writer's token authenticator; without one the console is served on loopback listeners only, and says so. */
  readonly authenticateToken?: TokenAuthenticator;
  /** Verifies the audit chain (on request: it reads the whole trail). */
  readonly verifyAudit?: () => AuditVerification;
  /** The writer's role, e.g. "primary" or "standby". */
  readonly role?: () => string;
}

export interface ConsoleDeps {
  readonly core: WriterCore;
  readonly admin: AdminOperations;
  readonly now: () => number;
  /** The HTTP listener's bound address, to tell whether it is loopback only. */
  readonly httpAddress: () => string;
  readonly sidecars: SidecarDirectory;
  readonly writer: () => { writerId: string; ready: boolean; natsConnected: boolean; headRevision: number; ledgerId: string };
  /** JetStream, while connected (dead letters are browsed on their stream). */
  readonly jsm: () => JetStreamManager | undefined;
  readonly auth?: ConsoleAuth | undefined;
}

const PAGE_ROWS = 50;
/** One audit page reads at most this many entries, whatever the filters, so a page is always cheap. */
const SCAN_BUDGET = 5_000;
const DEAD_LETTERS_PER_PAGE = 20;
const PAYLOAD_PREVIEW_BYTES = 64;
const MAX_PARAM_CHARS = 512;
const READ_ROLE = "read";

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

function send(res: ServerResponse, status: number, html: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS, ...headers }).end(html);
}

function redirect(res: ServerResponse, location: string, headers: Record<string, string> = {}): void {
  res.writeHead(303, { location, ...SECURITY_HEADERS, ...headers }).end();
}

function query(req: IncomingMessage): URLSearchParams {
  return new URL(req.url ?? "/", "http://console").searchParams;
}

function param(q: URLSearchParams, name: string): string {
  const v = (q.get(name) ?? "").trim();
  if (v.length > MAX_PARAM_CHARS) throw new InvalidArgumentError(name, `longer than ${MAX_PARAM_CHARS} characters`);
  return v;
}

/** An instant from a query parameter: ISO 8601 (`2026-11-30T10:00Z`) or Unix milliseconds. */
function instant(q: URLSearchParams, name: string): number | undefined {
  const v = param(q, name);
  if (!v) return undefined;
  const t = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(t)) throw new InvalidArgumentError(name, `"${v}" is not a time (use ISO 8601 like 2026-11-30T10:00:00Z, or Unix milliseconds)`);
  return t;
}

function safeNext(v: string | undefined): string {
  return v && /^\/console(\/[A-Za-z0-9._~\-/]*)?(\?[^\s]*)?$/.test(v) && !v.startsWith("//") ? v : "/console/customer";
}

/** The console's routes on the writer's HTTP listener (`/console/...`). Read-only. */
export function consoleRoutes(deps: ConsoleDeps): Record<string, RouteHandler> {
  const sessions = new Sessions();
  const auth = deps.auth ?? {};
  const authenticate = auth.authenticateToken;
  let lastVerification: { atMs: number; result: AuditVerification } | undefined;

  /** The principal, or undefined after answering (login page, 403). */
  const authorize = (req: IncomingMessage, res: ServerResponse): { principal: ConsolePrincipal; warning?: string } | undefined => {
    if (!authenticate) {
      const host = deps.httpAddress().replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
      if (!isLoopback(host)) {
        send(res, 403, page({ title: "Console disabled", active: "" }, `<h1>Console disabled</h1><p>This writer has no authentication configured and listens on ${esc(deps.httpAddress())}, which other machines can reach. Configure writer authentication to use the console here.</p>`));
        return undefined;
      }
      return {
        principal: { name: "local (no authentication)", roles: new Set([READ_ROLE]) },
        warning: `No authentication is configured: this console is served without a login because the writer listens on loopback only (${deps.httpAddress()}).`,
      };
    }
    const token = bearerToken(req) ?? sessions.token(cookieValue(req, COOKIE));
    const principal = token === undefined ? undefined : authenticate(token);
    if (!principal) {
      send(res, 401, loginPage(req.url ?? "/console/customer"));
      return undefined;
    }
    if (!principal.roles.has(READ_ROLE)) {
      send(res, 403, page({ title: "Forbidden", active: "", principal: principal.name }, `<h1>Forbidden</h1><p>${esc(principal.name)} does not have the <code>read</code> role the console needs.</p>`));
      return undefined;
    }
    return { principal };
  };

  const guarded =
    (active: "customer" | "audit" | "health", title: string, render: (q: URLSearchParams) => string | Promise<string>): RouteHandler =>
    async (req, res) => {
      const who = authorize(req, res);
      if (!who) return;
      let body: string;
      try {
        body = await render(query(req));
      } catch (err) {
        if (!(err instanceof InvalidArgumentError)) throw err;
        body = `<h1>${esc(title)}</h1><p class="error">${esc(err.message)}</p>`;
      }
      send(res, 200, page({ title, active, principal: who.principal.name, ...(who.warning ? { warning: who.warning } : {}) }, body));
    };

  return {
    "GET /console": (_req, res) => redirect(res, "/console/customer"),
    "GET /console/": (_req, res) => redirect(res, "/console/customer"),
    "GET /console/assets/console.css": (_req, res) => {
      res.writeHead(200, { "content-type": "text/css; charset=utf-8", "cache-control": "max-age=300", "x-content-type-options": "nosniff" }).end(CSS);
    },
    "GET /console/assets/console.js": (_req, res) => {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "max-age=300", "x-content-type-options": "nosniff" }).end(JS);
    },
    "GET /console/login": (req, res) => {
      if (!authenticate) return redirect(res, "/console/customer");
      send(res, 200, loginPage(safeNext(query(req).get("next") ?? undefined)));
    },
    "POST /console/login": (req, res, body) => {
      const form = new URLSearchParams(body.toString("utf8"));
      const next = safeNext(form.get("next") ?? undefined);
      if (!authenticate) return redirect(res, next);
      const token = (form.get("token") ?? "").trim();
      const principal = token && token.length <= MAX_TOKEN_CHARS ? authenticate(token) : undefined;
      if (!principal) return send(res, 401, loginPage(next, "That token was not accepted."));
      if (!principal.roles.has(READ_ROLE)) return send(res, 403, loginPage(next, `${principal.name} does not have the read role the console needs.`));
      const secure = req.headers["x-forwarded-proto"] === "https";
      redirect(res, next, { "set-cookie": sessions.cookie(sessions.create(token), secure) });
    },
    "POST /console/logout": (req, res) => {
      sessions.delete(cookieValue(req, COOKIE));
      redirect(res, authenticate ? "/console/login" : "/console/customer", { "set-cookie": Sessions.clearCookie() });
    },
    "GET /console/customer": guarded("customer", "Customer", (q) => customerPage(deps, q)),
    "GET /console/audit": guarded("audit", "Audit trail", (q) => {
      if (q.get("verify") === "1" && auth.verifyAudit) lastVerification = { atMs: deps.now(), result: auth.verifyAudit() };
      return auditPage(deps, q, auth.verifyAudit ? (lastVerification ?? null) : undefined);
    }),
    "GET /console/audit.jsonl": async (req, res) => {
      if (!authorize(req, res)) return;
      let filter: AuditFilter;
      try {
        filter = auditFilter(query(req), deps);
      } catch (err) {
        res.writeHead(400, { "content-type": "text/plain; charset=utf-8", ...SECURITY_HEADERS }).end(`${errorMessage(err)}\n`);
        return;
      }
      res.writeHead(200, {
        "content-type": "application/x-ndjson; charset=utf-8",
        "content-disposition": 'attachment; filename="proofgate-audit.jsonl"',
        ...SECURITY_HEADERS,
      });
      await exportAudit(deps, filter, res);
    },
    "GET /console/health": guarded("health", "Health", (q) => healthPage(deps, q)),
  };
}

function loginPage(next: string, error?: string): string {
  return page(
    { title: "Sign in", active: "" },
    `<h1>Sign in</h1><p>Paste a writer API token with the <code>read</code> role.</p>${error ? `<p class="error" id="login-error">${esc(error)}</p>` : ""}
<form method="post" action="/console/login" id="login"><input type="hidden" name="next" value="${esc(safeNext(next))}">
<label>Token <input type="password" name="token" autocomplete="off" size="48" required></label> <button type="submit">Sign in</button></form>`,
  );
}

// ------------------------------------------------------------------------------------ customer

function customerPage(deps: ConsoleDeps, q: URLSearchParams): string {
  const id = q.get("id") ?? "";
  const search = `<form method="get" action="/console/customer" class="filters" id="search"><label>Customer id<input name="id" value="${esc(id)}" size="40" autofocus></label><button type="submit">Show</button></form>`;
  if (!id) return `<h1>Customer</h1>${search}<p class="muted">Search by the exact customer id your billing system uses.</p>`;
  let res;
  try {
    res = deps.admin.getCustomer({ customerId: id });
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof InvalidArgumentError) return `<h1>Customer</h1>${search}<p class="error" id="not-found">${esc(err.message)}</p>`;
    throw err;
  }
  const now = deps.now();
  const from = instant(q, "from");
  const to = instant(q, "to");
  if (from !== undefined && to !== undefined && to <= from) throw new InvalidArgumentError("to", "must be after from");
  const timeline = buildTimeline({
    customerId: id,
    facts: res.facts,
    overrides: res.document?.overrides ?? [],
    audit: res.timeline,
    catalog: deps.core.catalog,
    nowMs: now,
    ...(from === undefined ? {} : { fromMs: from }),
    ...(to === undefined ? {} : { toMs: to }),
  });
  const link = (label: string, f: number | undefined, t: number | undefined): string => {
    const p = new URLSearchParams({ id });
    if (f !== undefined) p.set("from", iso(f));
    if (t !== undefined) p.set("to", iso(t));
    return `<a href="/console/customer?${esc(p.toString())}">${label}</a>`;
  };
  const DAY = 86_400_000;
  const zoom = `<p class="pager">Axis: ${link("whole history", undefined, undefined)} ${link("last 7 days", now - 7 * DAY, now + DAY)} ${link("and the next 30 days", timeline.startMs, now + 30 * DAY)}
<form method="get" action="/console/customer" class="inline"><input type="hidden" name="id" value="${esc(id)}"><input name="from" placeholder="from (ISO)" value="${esc(q.get("from") ?? "")}" size="22"> <input name="to" placeholder="to (ISO)" value="${esc(q.get("to") ?? "")}" size="22"> <button type="submit">Zoom</button></form></p>`;
  const legend = `<div class="legend">${STATUS_ORDER.map((s) => `<span><svg viewBox="0 0 12 12"><rect class="status-${s.toLowerCase().replace(/_/g, "-")}" width="12" height="12"/></svg>${esc(s)}</span>`).join("")}</div>`;
  const answers = res.entitlements
    .map(
      (e) =>
        `<tr data-feature="${esc(e.feature)}"><td>${esc(e.feature)}</td><td class="${e.allowed ? "allowed" : "denied"}">${e.allowed ? "allowed" : "denied"}</td><td>${esc(statusName(e.status))}</td><td>${esc(e.value)}</td><td>${esc(e.reason)}</td><td>${e.validUntil ? esc(iso(e.validUntil.getTime())) : ""}</td></tr>`,
    )
    .join("");
  const doc = res.document;
  return `<h1>Customer <code>${esc(id)}</code></h1>${search}
<p>Revision <strong id="revision">${res.revision}</strong>${res.revision === 0 ? " (the latest change is still on its way to the state stream)" : ""} · ${doc?.factCount ?? 0} facts · last event ${doc?.lastEventAtMs ? esc(iso(doc.lastEventAtMs)) : "none"} · subject token <code>${esc(customerToken(id))}</code> · <a href="/console/audit?customer=${encodeURIComponent(id)}">audit trail</a></p>
${zoom}
<div class="layout"><div>${timelineSvg(timeline)}${legend}
${timeline.truncated ? `<p class="muted">The access rows evaluate the latest ${MAX_INSTANTS} event instants; ${timeline.truncated} earlier ones are left out (see the audit trail).</p>` : ""}
<div id="details"><span class="muted">Hover or click a mark or a segment to see the event, its source, its correlation id and the rule that decided.</span></div></div>
<div class="side"><h2>Access now <span class="muted">(${esc(iso(now))})</span></h2>
<table id="answers"><thead><tr><th>feature</th><th></th><th>status</th><th>value</th><th>reason</th><th>valid until</th></tr></thead><tbody>${answers || '<tr><td colspan="6" class="muted">no catalog applied yet</td></tr>'}</tbody></table></div></div>
<p class="muted">The access rows apply the check rules to the facts known now, at every instant where the answer can change; the audit trail shows what the writer recorded at the time.</p>`;
}

// ------------------------------------------------------------------------------------ audit

interface AuditFilter {
  readonly customer: string;
  readonly token: string | undefined;
  readonly kind: AuditKind | undefined;
  readonly actor: string;
  readonly fromMs: number | undefined;
  readonly toMs: number | undefined;
  /** Entries with seq below this (the page cursor). */
  readonly before: number;
  /** No entry below this seq can be in the time window. */
  readonly lowestSeq: number;
}

const KINDS = Object.entries(AuditKind)
  .filter((e): e is [string, AuditKind] => typeof e[1] === "number" && e[1] !== AuditKind.AUDIT_KIND_UNSPECIFIED && e[1] !== AuditKind.UNRECOGNIZED)
  .map(([name, value]) => ({ name: name.replace("AUDIT_KIND_", ""), value }));

function auditFilter(q: URLSearchParams, deps: ConsoleDeps): AuditFilter {
  const ledger = deps.core.ledger;
  const customer = param(q, "customer");
  const kindName = param(q, "kind");
  const kind = kindName ? KINDS.find((k) => k.name === kindName)?.value : undefined;
  if (kindName && kind === undefined) throw new InvalidArgumentError("kind", `unknown kind "${kindName}" (one of ${KINDS.map((k) => k.name).join(", ")})`);
  const fromMs = instant(q, "from");
  const toMs = instant(q, "to");
  const beforeRaw = param(q, "before");
  if (beforeRaw && !/^\d{1,15}$/.test(beforeRaw)) throw new InvalidArgumentError("before", "must be an audit seq");
  const top = toMs === undefined ? ledger.auditHighSeq() + 1 : ledger.auditSeqAfter(toMs + 1);
  return {
    customer,
    token: customer ? customerToken(customer) : undefined,
    kind,
    actor: param(q, "actor"),
    fromMs,
    toMs,
    before: beforeRaw ? Math.min(Number(beforeRaw), top) : top,
    lowestSeq: fromMs === undefined ? 0 : ledger.auditSeqAfter(fromMs),
  };
}

function matches(e: AuditEntry, f: AuditFilter): boolean {
  const at = e.at?.getTime() ?? 0;
  return (
    (f.kind === undefined || e.kind === f.kind) &&
    (!f.actor || e.actor === f.actor) &&
    (f.fromMs === undefined || at >= f.fromMs) &&
    (f.toMs === undefined || at <= f.toMs)
  );
}

/** One page, newest first: at most PAGE_ROWS matches, reading at most SCAN_BUDGET entries. */
function auditScan(deps: ConsoleDeps, f: AuditFilter): { rows: AuditEntry[]; next: number | undefined; scanned: number } {
  const rows: AuditEntry[] = [];
  let cursor = f.before;
  let scanned = 0;
  while (rows.length < PAGE_ROWS && scanned < SCAN_BUDGET && cursor > f.lowestSeq) {
    const batch = deps.core.ledger.auditBefore(cursor, Math.min(500, SCAN_BUDGET - scanned), f.token);
    if (batch.length === 0) return { rows, next: undefined, scanned };
    for (const e of batch) {
      scanned++;
      cursor = e.seq;
      if (e.seq < f.lowestSeq) return { rows, next: undefined, scanned };
      if (matches(e, f)) rows.push(e);
      if (rows.length === PAGE_ROWS) break;
    }
  }
  return { rows, next: cursor > f.lowestSeq && cursor > 1 ? cursor : undefined, scanned };
}

function auditPage(deps: ConsoleDeps, q: URLSearchParams, verification: { atMs: number; result: AuditVerification } | null | undefined): string {
  const f = auditFilter(q, deps);
  const { rows, next, scanned } = auditScan(deps, f);
  const keep = (extra: Record<string, string>): string => {
    const p = new URLSearchParams();
    for (const k of ["customer", "kind", "actor", "from", "to"]) {
      const v = q.get(k);
      if (v) p.set(k, v);
    }
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    return p.toString();
  };
  const chain =
    verification === undefined
      ? `<span class="muted" id="chain">Chain verification is not available in this writer.</span>`
      : verification === null
        ? `<span id="chain">Not verified yet.</span> <a href="/console/audit?${esc(keep({ verify: "1" }))}">Verify the chain now</a> (reads the whole trail)`
        : `<span id="chain" class="${verification.result.ok ? "ok" : "bad"}">${
            verification.result.ok
              ? `Verified: ${verification.result.entries} entries, chain intact`
              : `Broken at entry ${verification.result.firstBadId}: ${esc(verification.result.reason)}`
          }</span> <span class="muted">(at ${esc(iso(verification.atMs))})</span> <a href="/console/audit?${esc(keep({ verify: "1" }))}">Verify again</a>`;
  const kindOptions = [`<option value="">any</option>`, ...KINDS.map((k) => `<option${q.get("kind") === k.name ? " selected" : ""}>${k.name}</option>`)].join("");
  const table = rows
    .map((e) => {
      const change = e.kind === AuditKind.AUDIT_KIND_ACCESS_CHANGED ? `${e.feature}: ${statusName(e.fromStatus)} → ${statusName(e.toStatus)}` : e.feature;
      const who = e.customerId ? `<a href="/console/customer?id=${encodeURIComponent(e.customerId)}">${esc(e.customerId)}</a>` : "";
      return `<tr><td class="num">${e.seq}</td><td class="mono">${esc(e.at ? iso(e.at.getTime()) : "")}</td><td>${esc(KINDS.find((k) => k.value === e.kind)?.name ?? String(e.kind))}</td><td>${who}</td><td>${esc(e.subscriptionId)}</td><td>${esc(change)}</td><td class="mono">${esc(e.eventId)}</td><td class="mono">${esc(e.correlationId)}</td><td>${esc(e.actor)}</td><td>${esc(e.reason || e.detail)}</td></tr>`;
    })
    .join("");
  return `<h1>Audit trail</h1>
<p>${chain}</p>
<form method="get" action="/console/audit" class="filters" id="audit-filters">
<label>From<input name="from" value="${esc(q.get("from") ?? "")}" placeholder="2026-11-01T00:00:00Z" size="22"></label>
<label>To<input name="to" value="${esc(q.get("to") ?? "")}" placeholder="ISO or Unix ms" size="22"></label>
<label>Customer id<input name="customer" value="${esc(f.customer)}" size="24"></label>
<label>Kind<select name="kind">${kindOptions}</select></label>
<label>Actor<input name="actor" value="${esc(f.actor)}" size="16"></label>
<button type="submit">Filter</button> <a href="/console/audit.jsonl?${esc(keep({}))}" id="export">Export as JSON lines</a></form>
<table id="audit"><thead><tr><th>seq</th><th>at (writer)</th><th>kind</th><th>customer</th><th>subscription</th><th>feature / change</th><th>event</th><th>correlation</th><th>actor</th><th>reason / detail</th></tr></thead>
<tbody>${table || '<tr><td colspan="10" class="muted">no matching entries in this stretch</td></tr>'}</tbody></table>
<p class="pager">${rows.length} shown, ${scanned} read${next !== undefined ? ` · <a href="/console/audit?${esc(keep({ before: String(next) }))}" id="older">Older →</a>` : " · end of the trail"}</p>`;
}

/** The same entries as the page, every one of them: AuditEntry's protobuf JSON, one per line. */
async function exportAudit(deps: ConsoleDeps, f: AuditFilter, res: ServerResponse): Promise<void> {
  let cursor = f.before;
  for (;;) {
    const batch = deps.core.ledger.auditBefore(cursor, 1_000, f.token);
    const lines: string[] = [];
    let done = batch.length === 0;
    for (const e of batch) {
      cursor = e.seq;
      if (e.seq < f.lowestSeq) {
        done = true;
        break;
      }
      if (matches(e, f)) lines.push(JSON.stringify(AuditEntry.toJSON(e)));
    }
    if (lines.length > 0 && !res.write(`${lines.join("\n")}\n`)) await new Promise((r) => res.once("drain", r));
    if (done || res.destroyed) break;
    // Big exports must not hold the writer's event loop.
    await yieldToLoop();
  }
  res.end();
}

// ------------------------------------------------------------------------------------ health

async function healthPage(deps: ConsoleDeps, q: URLSearchParams): Promise<string> {
  const w = deps.writer();
  const now = deps.now();
  const ledger = deps.core.ledger;
  const outbox = ledger.pendingStats();
  const waiting = ledger.pendingDeadLetters(DEAD_LETTERS_PER_PAGE);
  const card = (label: string, value: string, id: string, klass = ""): string => `<div class="card" id="${id}"><div class="muted">${label}</div><div class="v ${klass}">${value}</div></div>`;
  const cards = [
    card("writer role", esc(deps.auth?.role?.() ?? "writer"), "role"),
    card("ready", w.ready ? "yes" : "no", "ready", w.ready ? "ok" : "bad"),
    card("NATS", w.natsConnected ? "connected" : "disconnected", "nats", w.natsConnected ? "ok" : "bad"),
    card("state stream head revision", String(w.headRevision), "head"),
    card("outbox depth", String(outbox.count), "outbox", outbox.count > 0 ? "bad" : ""),
    card("oldest unpublished", outbox.oldestAtMs === undefined ? "-" : `${((now - outbox.oldestAtMs) / 1000).toFixed(1)} s`, "outbox-age"),
  ].join("");

  const before = param(q, "dl_before");
  if (before && !/^\d{1,15}$/.test(before)) throw new InvalidArgumentError("dl_before", "must be a stream sequence");
  const stream = await deadLetterPage(deps.jsm(), before ? Number(before) : undefined);

  const sidecars = deps.sidecars.list();
  const sidecarRows = sidecars
    .map(
      (s) =>
        `<tr><td class="mono">${esc(s.id)}</td><td class="num">${s.appliedRevision}</td><td class="num">${Math.max(0, w.headRevision - s.appliedRevision)}</td><td>${s.ready ? "ready" : "syncing"}</td><td class="${s.stale ? "bad" : "ok"}">${s.stale ? "stale" : "fresh"}</td><td class="num">${s.lagSeconds < 0 ? "never current" : `${s.lagSeconds.toFixed(1)} s`}</td><td class="num">${(Math.max(0, now - s.heardAtMs) / 1000).toFixed(1)} s ago</td></tr>`,
    )
    .join("");
  return `<h1>Health</h1><p class="muted">Writer <code>${esc(w.writerId)}</code>, ledger <code>${esc(w.ledgerId)}</code>, at ${esc(iso(now))}</p>
<div class="cards">${cards}</div>
<h2>Sidecars heard from in the last 15 minutes</h2>
<table id="sidecars"><thead><tr><th>sidecar</th><th>applied revision</th><th>behind head by</th><th>state</th><th>answers</th><th>last current</th><th>heard</th></tr></thead>
<tbody>${sidecarRows || '<tr><td colspan="7" class="muted">none heard from (sidecars announce themselves on proofgate.sidecar.status every few seconds)</td></tr>'}</tbody></table>
<h2>Dead letters</h2>
${waiting.length > 0 ? `<p>${waiting.length}${waiting.length === DEAD_LETTERS_PER_PAGE ? "+" : ""} waiting in the ledger to reach the ${DEADLETTER_STREAM} stream.</p>${deadLetterTable(waiting.map((r) => ({ seq: `ledger ${r.id}`, dl: safeDecode(r.payload) })))}` : ""}
${stream}`;
}

function safeDecode(bytes: Uint8Array): DeadLetter | undefined {
  try {
    return DeadLetter.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The first bytes of a payload as text (non-printable bytes as ·) and hex. */
function preview(bytes: Uint8Array): string {
  const head = bytes.subarray(0, PAYLOAD_PREVIEW_BYTES);
  const text = [...head].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "·")).join("");
  const hex = Buffer.from(head).toString("hex").replace(/(..)/g, "$1 ").trim();
  return `<div class="mono">${esc(text)}${bytes.length > PAYLOAD_PREVIEW_BYTES ? "…" : ""}</div><div class="mono muted">${esc(hex)}</div>`;
}

function deadLetterTable(rows: { seq: string; dl: DeadLetter | undefined }[]): string {
  const body = rows
    .map(({ seq, dl }) =>
      dl
        ? `<tr><td class="num">${esc(seq)}</td><td class="mono">${dl.receivedAt ? esc(iso(dl.receivedAt.getTime())) : ""}</td><td>${esc(dl.origin)}</td><td class="mono">${esc(dl.eventId)}</td><td>${esc(dl.reason)}</td><td>${esc(dl.contentType)}</td><td class="num">${dl.payload.length}</td><td>${preview(dl.payload)}</td></tr>`
        : `<tr><td class="num">${esc(seq)}</td><td colspan="7" class="error">not a DeadLetter record</td></tr>`,
    )
    .join("");
  return `<table class="deadletters"><thead><tr><th>seq</th><th>received</th><th>origin</th><th>event</th><th>reason</th><th>content type</th><th>bytes</th><th>payload (first ${PAYLOAD_PREVIEW_BYTES} bytes)</th></tr></thead><tbody>${body}</tbody></table>`;
}

/** A page of the dead-letter stream, newest first, read by sequence (direct gets, no consumer). */
async function deadLetterPage(jsm: JetStreamManager | undefined, before: number | undefined): Promise<string> {
  if (!jsm) return `<p class="muted" id="dl-stream">Not connected to NATS: the ${DEADLETTER_STREAM} stream cannot be read now.</p>`;
  let info;
  try {
    info = await jsm.streams.info(DEADLETTER_STREAM);
  } catch (err) {
    return `<p class="error" id="dl-stream">Cannot read the ${DEADLETTER_STREAM} stream: ${esc(errorMessage(err))}</p>`;
  }
  const { messages, first_seq: first, last_seq: last } = info.state;
  if (messages === 0) return `<p id="dl-stream">The ${DEADLETTER_STREAM} stream is empty.</p>`;
  const rows: { seq: string; dl: DeadLetter | undefined }[] = [];
  let seq = Math.min(before === undefined ? last : before - 1, last);
  // Deleted sequences leave gaps: bounded look-ups per page.
  for (let tries = 0; seq >= first && rows.length < DEAD_LETTERS_PER_PAGE && tries < DEAD_LETTERS_PER_PAGE * 5; tries++, seq--) {
    try {
      const m = await jsm.streams.getMessage(DEADLETTER_STREAM, { seq });
      rows.push({ seq: String(seq), dl: safeDecode(m.data) });
    } catch {
      // a deleted message
    }
  }
  const older = seq >= first ? ` · <a href="/console/health?dl_before=${seq + 1}" id="dl-older">Older →</a>` : "";
  return `<p id="dl-stream">${messages} on the ${DEADLETTER_STREAM} stream (sequences ${first}..${last}).${older}</p>${deadLetterTable(rows)}`;
}
