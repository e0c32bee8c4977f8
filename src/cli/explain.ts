import { AuditKind, GetCustomerResponse, type AuditEntry } from "../gen/proofgate/v1/admin.js";
import { OverrideEffect } from "../gen/proofgate/v1/document.js";
import { statusName } from "../policy/index.js";
import { customerToken } from "../replication/subjects.js";
import { DEFAULT_WRITER, call, writerAddress, writerClients } from "./client.js";
import { parseCommand, required } from "./args.js";

export const summary = "show why a customer has or lacks access: facts, transitions, decisions";

const USAGE = `usage: proofgate explain --customer ID [--writer HOST:PORT] [--json]

Asks the writer (PROOFGATE_WRITER_ADDRESS, the running \`proofgate dev\`, else ${DEFAULT_WRITER}) for the customer's document, facts and audit timeline and
prints them as a story: when intent changed, when proof arrived, when access changed, and why.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, help } = parseCommand(argv, { customer: { type: "string" }, writer: { type: "string" }, json: { type: "boolean" } }, USAGE);
  if (help) return 0;
  const customerId = required(v.customer, "--customer");
  const { ingest, admin } = writerClients(writerAddress(v.writer));
  try {
    const res = await call<GetCustomerResponse>((md, o, cb) => admin.getCustomer({ customerId }, md, o, cb));
    console.log(v.json ? JSON.stringify(GetCustomerResponse.toJSON(res), null, 2) : renderExplanation(customerId, res, Date.now()));
    return 0;
  } finally {
    ingest.close();
    admin.close();
  }
}

const at = (d: Date | undefined): string => (d ? d.toISOString().slice(0, 19).replace("T", " ") : "????-??-?? ??:??:??");

/** The readable timeline; pure, so it is tested without services. */
export function renderExplanation(customerId: string, res: GetCustomerResponse, nowMs: number): string {
  const out: string[] = [];
  out.push(`Customer ${customerId}  (subject token ${customerToken(customerId)}, revision ${res.revision})`, "");
  out.push(`Access now (${at(new Date(nowMs))} UTC):`);
  const width = Math.max(8, ...res.entitlements.map((e) => e.feature.length));
  for (const e of res.entitlements) {
    const value = e.allowed && e.value && e.value !== "true" ? ` = ${e.value}` : "";
    out.push(`  ${e.allowed ? "allowed" : "denied "}  ${statusName(e.status).padEnd(16)} ${e.feature.padEnd(width)}${value}  ${e.reason}`);
  }
  const overrides = res.document?.overrides ?? [];
  if (overrides.length > 0) {
    out.push("", "Overrides:");
    for (const o of overrides) {
      const effect = o.effect === OverrideEffect.OVERRIDE_EFFECT_DENY ? "DENY " : "GRANT";
      const window = `${o.validFromMs ? at(new Date(o.validFromMs)) : "always"} .. ${o.validUntilMs ? at(new Date(o.validUntilMs)) : "open"}`;
      out.push(`  ${o.overrideId}  ${effect} ${o.feature}  ${window}  by ${o.actor}: ${o.reason}`);
    }
  }
  const occurred = new Map(res.facts.map((f) => [f.eventId, f.occurredAt]));
  out.push("", "Timeline (writer time; events also show when they occurred):");
  for (const entry of res.timeline) out.push(`  ${at(entry.at)}  ${line(entry, occurred)}`);
  if (res.timeline.length === 0) out.push("  (nothing recorded)");
  return out.join("\n");
}

/** The authenticated principal, and whom the caller said it acted for. */
const by = (e: AuditEntry): string => (e.onBehalfOf ? `${e.actor} (on behalf of ${e.onBehalfOf})` : e.actor);

function line(e: AuditEntry, occurred: ReadonlyMap<string, Date | undefined>): string {
  const tail = [e.eventId && `event ${e.eventId}`, e.correlationId && `correlation ${e.correlationId}`].filter(Boolean).join(", ");
  const suffix = tail ? `  [${tail}]` : "";
  switch (e.kind) {
    case AuditKind.AUDIT_KIND_EVENT_APPLIED: {
      const label = e.detail.startsWith("payment") ? "proof " : e.detail.startsWith("subscription") ? "intent" : "dunning";
      const when = occurred.get(e.eventId);
      return `${label}   ${e.detail}${when ? ` (occurred ${at(when)})` : ""}${suffix}`;
    }
    case AuditKind.AUDIT_KIND_EVENT_REJECTED:
      return `reject   ${e.detail || e.reason}${suffix}`;
    case AuditKind.AUDIT_KIND_ACCESS_CHANGED:
      return `access   ${e.feature}: ${statusName(e.fromStatus)} -> ${statusName(e.toStatus)}${e.reason ? `  (${e.reason})` : ""}${suffix}`;
    case AuditKind.AUDIT_KIND_OVERRIDE_PUT:
    case AuditKind.AUDIT_KIND_OVERRIDE_DELETED:
      return `operator ${e.detail} by ${by(e)}: ${e.reason}`;
    case AuditKind.AUDIT_KIND_CATALOG_APPLIED:
      return `catalog  ${e.detail} by ${by(e)}: ${e.reason}`;
    default:
      return `${e.detail || "(no detail)"}${suffix}`;
  }
}
