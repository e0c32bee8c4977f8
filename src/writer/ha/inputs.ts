import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { DiscardPolicy, ErrorCode, headers, NatsError, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type PubAck, type StreamConfig } from "nats";
import { errorMessage, InvalidArgumentError, UnavailableError } from "../../errors/index.js";
import { Catalog } from "../../gen/proofgate/v1/catalog.js";
import { Override } from "../../gen/proofgate/v1/document.js";
import { isStreamNotFound } from "../../replication/connection.js";
import { BILLING_STREAM } from "../../replication/subjects.js";

/**
 * The writers' input stream (docs/writer.md, "High availability"). Every input reaches every
 * writer through it, in one order decided by JetStream: billing events published to
 * PROOFGATE_BILLING (sourced into it by the server), event batches received over gRPC and Stripe
 * webhooks, and admin commands. Each writer folds it in order into its own ledger, so all ledgers
 * agree byte for byte and a standby is always current.
 */
export const INPUT_STREAM = "PROOFGATE_INPUT";
export const INPUT_SUBJECTS = "proofgate.input.>";
/** A batch of events received by a writer (protobuf PublishRequest). */
export const INPUT_EVENTS_SUBJECT = "proofgate.input.events";
/** An admin command (JSON, see AdminCommand). */
export const INPUT_ADMIN_SUBJECT = "proofgate.input.admin";
/** Where an event batch came in ("grpc" or "webhook") and the principal that sent it. */
export const HEADER_INPUT_ORIGIN = "Proofgate-Origin";
export const HEADER_INPUT_PRINCIPAL = "Proofgate-Principal";
/**
 * The receiving writer's clock when it took the batch (ms): the "now" its events are validated
 * against on every writer. Billing events from NATS use their input stream timestamp instead.
 */
export const HEADER_INPUT_RECEIVED_AT = "Proofgate-Received-At";

/**
 * Kept without an age limit: a writer joining with an empty ledger folds it from the first
 * message, and facts are forever (docs/deployment.md, "Input retention").
 */
export function inputStreamConfig(replicas: number): Partial<StreamConfig> {
  return {
    name: INPUT_STREAM,
    subjects: [INPUT_SUBJECTS],
    sources: [{ name: BILLING_STREAM }],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    max_age: 0,
    duplicate_window: 120 * 1e9,
    num_replicas: replicas,
  };
}

/** Creates the input stream if missing (it never changes an existing one: its sources and retention are the operator's to tune). */
export async function ensureInputStream(jsm: JetStreamManager, replicas: number): Promise<void> {
  try {
    await jsm.streams.info(INPUT_STREAM);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    await jsm.streams.add(inputStreamConfig(replicas));
  }
}

/** Who made an admin change, as the audit records it. */
export interface Actor {
  readonly actor: string;
  readonly onBehalfOf: string;
}

/**
 * An admin change as it travels on the input stream. Everything that is not a function of the
 * ledger (generated ids, the time of the change) is decided by the writer that received the call,
 * so every writer applies the command identically.
 */
export type AdminCommand =
  | { readonly kind: "catalog"; readonly catalog: Catalog; readonly allowRemovals: boolean; readonly who: Actor; readonly reason: string }
  | { readonly kind: "put_override"; readonly customerId: string; readonly override: Override; readonly who: Actor; readonly reason: string }
  | { readonly kind: "delete_override"; readonly customerId: string; readonly overrideId: string; readonly who: Actor; readonly reason: string }
  | { readonly kind: "erase"; readonly customerId: string; readonly atMs: number; readonly who: Actor; readonly reason: string };

export function encodeAdminCommand(c: AdminCommand): Uint8Array {
  const body =
    c.kind === "catalog"
      ? { ...c, catalog: Catalog.toJSON(c.catalog) }
      : c.kind === "put_override"
        ? { ...c, override: Override.toJSON(c.override) }
        : c;
  return Buffer.from(JSON.stringify({ v: 1, ...body }));
}

const str = (o: Record<string, unknown>, k: string): string => {
  const v = o[k];
  if (typeof v !== "string") throw new Error(`admin command: ${k} must be a string`);
  return v;
};

function actorOf(o: Record<string, unknown>): Actor {
  const w = o["who"];
  if (typeof w !== "object" || w === null) throw new Error("admin command: who is missing");
  return { actor: str(w as Record<string, unknown>, "actor"), onBehalfOf: str(w as Record<string, unknown>, "onBehalfOf") };
}

/** The command, or an error naming what is wrong (a message written by hand or by a newer writer). */
export function decodeAdminCommand(bytes: Uint8Array): AdminCommand {
  const parsed: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"));
  if (typeof parsed !== "object" || parsed === null) throw new Error("admin command: not an object");
  const o = parsed as Record<string, unknown>;
  if (o["v"] !== 1) throw new Error("admin command: unknown version");
  const who = actorOf(o);
  const reason = str(o, "reason");
  switch (o["kind"]) {
    case "catalog":
      return { kind: "catalog", catalog: Catalog.fromJSON(o["catalog"]), allowRemovals: o["allowRemovals"] === true, who, reason };
    case "put_override":
      return { kind: "put_override", customerId: str(o, "customerId"), override: Override.fromJSON(o["override"]), who, reason };
    case "delete_override":
      return { kind: "delete_override", customerId: str(o, "customerId"), overrideId: str(o, "overrideId"), who, reason };
    case "erase": {
      const atMs = o["atMs"];
      if (typeof atMs !== "number" || !Number.isSafeInteger(atMs)) throw new Error("admin command: atMs must be an integer");
      return { kind: "erase", customerId: str(o, "customerId"), atMs, who, reason };
    }
    default:
      throw new Error(`admin command: unknown kind ${JSON.stringify(o["kind"])}`);
  }
}

/** Room kept for headers below the server's max_payload. */
const HEADER_ROOM = 1_024;
/** How often a publish that found no stream leader is sent again. */
const NO_LEADER_RETRY_MS = 250;
const NO_RESPONDERS: string = ErrorCode.NoResponders;

/**
 * Appends one input to the input stream and returns its sequence. Nats-Msg-Id is a digest of the
 * input and its sender, so a retried call within JetStream's duplicate window is stored once
 * (the ack then names the first copy, and says so). Fails with UNAVAILABLE when NATS does not
 * confirm it (retrying is safe).
 */
export async function appendInput(
  js: JetStreamClient | undefined,
  maxPayload: number | undefined,
  subject: string,
  data: Uint8Array,
  meta: Readonly<Record<string, string>>,
  timeoutMs: number,
): Promise<{ seq: number; duplicate: boolean }> {
  if (!js) throw new UnavailableError("NATS is not reachable: nothing was applied; retry when the writer is ready");
  if (maxPayload !== undefined && data.length > maxPayload - HEADER_ROOM)
    throw new InvalidArgumentError("request", `${data.length} bytes, above what the NATS server accepts (${maxPayload - HEADER_ROOM})`);
  const h = headers();
  const digest = createHash("sha256").update(subject).update(data);
  for (const [k, v] of Object.entries(meta)) {
    h.set(k, v);
    digest.update(`\0${k}=${v}`);
  }
  try {
    const msgID = digest.digest("base64url");
    // 503 is "no responders": the stream is electing a leader (a node just lost or a stream just
    // created). That takes a few seconds and resends are stored once, so it is ridden out here,
    // for up to half the call's time, instead of failing every caller in the meantime.
    const end = Date.now() + timeoutMs;
    const patience = end - timeoutMs / 2;
    let ack: PubAck;
    for (;;) {
      try {
        ack = await js.publish(subject, data, { headers: h, msgID, timeout: Math.max(1, end - Date.now()) });
        break;
      } catch (err) {
        if (!(err instanceof NatsError && err.code === NO_RESPONDERS) || Date.now() + NO_LEADER_RETRY_MS > patience) throw err;
        await delay(NO_LEADER_RETRY_MS);
      }
    }
    return { seq: ack.seq, duplicate: ack.duplicate };
  } catch (err) {
    // A timeout leaves the outcome open (the client may still deliver it after a reconnect).
    throw new UnavailableError(`the change was not confirmed by the input stream (${errorMessage(err)}): it may or may not be applied; retrying is safe`);
  }
}
