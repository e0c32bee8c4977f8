import type { CheckRequest, CheckResponse } from "../gen/proofgate/v1/check.js";
import { statusName } from "../policy/index.js";
import { errorMessage } from "../errors/index.js";
import { DEFAULT_SIDECAR, call, checkClient, sidecarAddress } from "./client.js";
import { parseCommand, required } from "./args.js";

export const summary = "ask a sidecar whether a customer may use a feature";

const USAGE = `usage: proofgate check --customer ID --feature KEY [--quantity N] [--min-revision R] [--json]
                       [--address HOST:PORT | --socket PATH]

Asks a sidecar (PROOFGATE_SIDECAR_ADDRESS, the running \`proofgate dev\`, else ${DEFAULT_SIDECAR}) and prints the decision. Exit code 0 when allowed,
1 when denied, 2 on error.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, help } = parseCommand(
    argv,
    {
      customer: { type: "string" },
      feature: { type: "string" },
      quantity: { type: "string" },
      "min-revision": { type: "string" },
      address: { type: "string" },
      socket: { type: "string" },
      json: { type: "boolean" },
    },
    USAGE,
  );
  if (help) return 0;
  const address = v.socket ? `unix:${v.socket}` : sidecarAddress(v.address);
  const request: CheckRequest = {
    customerId: required(v.customer, "--customer"),
    feature: required(v.feature, "--feature"),
    quantity: v.quantity === undefined ? undefined : Number(v.quantity),
    minRevision: v["min-revision"] === undefined ? undefined : Number(v["min-revision"]),
  };
  const client = checkClient(address);
  try {
    const res = await call<CheckResponse>((md, o, cb) => client.check(request, md, o, cb));
    console.log(v.json ? JSON.stringify(checkJson(res)) : formatCheck(request, res));
    return res.allowed ? 0 : 1;
  } catch (err) {
    // 1 means "denied"; a script must be able to tell that from "could not ask".
    console.error(`proofgate check: ${errorMessage(err)}`);
    return 2;
  } finally {
    client.close();
  }
}

/**
 * Every field of the answer, for scripts. Not proto3 JSON, which leaves out fields at their
 * default (`allowed: false`, `stale: false`): a script must not have to know that.
 */
export function checkJson(res: CheckResponse): Record<string, unknown> {
  return {
    allowed: res.allowed,
    status: statusName(res.status),
    reason: res.reason,
    value: res.value,
    limit: res.limit ?? null,
    validUntil: res.validUntil?.toISOString() ?? null,
    revision: res.revision,
    stale: res.stale,
  };
}

export function formatCheck(req: CheckRequest, res: CheckResponse): string {
  const verdict = res.allowed ? "ALLOWED" : "DENIED";
  const lines = [`${verdict}  ${statusName(res.status)}  ${req.feature} for ${req.customerId}`, `  ${res.reason}`];
  if (res.value) lines.push(`  value: ${res.value}${res.limit !== undefined ? ` (limit ${res.limit})` : ""}`);
  if (res.validUntil) lines.push(`  valid until: ${res.validUntil.toISOString()}`);
  lines.push(`  revision: ${res.revision}${res.stale ? "  (STALE: the replica may be behind)" : ""}`);
  return lines.join("\n");
}
