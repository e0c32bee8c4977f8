import { randomUUID } from "node:crypto";
import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig, type StreamInfo } from "nats";
import {
  AUDIT_HEAD_SUBJECT,
  AUDIT_STREAM,
  BILLING_STREAM,
  BILLING_SUBJECTS,
  DEADLETTER_STREAM,
  DEADLETTER_SUBJECT,
  STATE_STREAM,
  STATE_SUBJECTS,
  customerTokenKeyId,
} from "./subjects.js";
import { isStreamNotFound } from "./connection.js";

const DAY_NS = 86_400 * 1e9;
const DUPLICATE_WINDOW_NS = 120 * 1e9;

/** Stream definitions; `replicas` is 1 on one machine, 3 in a NATS cluster. */
export function streamConfigs(replicas = 1): Partial<StreamConfig>[] {
  return [
    {
      name: BILLING_STREAM,
      subjects: [BILLING_SUBJECTS],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      // Kept a week after the writer acked them, so a ledger can be rebuilt or audited.
      max_age: 7 * DAY_NS,
      duplicate_window: DUPLICATE_WINDOW_NS,
      num_replicas: replicas,
    },
    {
      name: STATE_STREAM,
      subjects: [STATE_SUBJECTS],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      // Compacted: the stream is always exactly the current state, so a sidecar bootstraps from it.
      max_msgs_per_subject: 1,
      discard: DiscardPolicy.Old,
      // Lazy sidecars fetch one customer's last message with a direct get (NATS 2.9+), served by
      // any replica without going through the stream leader's API. Set on existing streams by update.
      allow_direct: true,
      duplicate_window: DUPLICATE_WINDOW_NS,
      num_replicas: replicas,
    },
    {
      name: DEADLETTER_STREAM,
      subjects: [DEADLETTER_SUBJECT],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_age: 30 * DAY_NS,
      num_replicas: replicas,
    },
    {
      // Audit chain heads: what a rewritten ledger is checked against. Kept for 400 days.
      name: AUDIT_STREAM,
      subjects: [AUDIT_HEAD_SUBJECT],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_age: 400 * DAY_NS,
      num_replicas: replicas,
    },
  ];
}

const STATE_DESCRIPTION = "proofgate access documents and catalog";
const INCARNATION = /\bincarnation=([0-9a-f-]{36})\b/;
/** The id of the customer token key its subjects were made with (subjects.ts customerTokenKeyId). */
const TOKENS = /\btokens=(k1:[A-Za-z0-9_-]{12})\b/;

/** The state stream's subjects were made with another customer token key than this process's. */
export class TokenKeyMismatchError extends Error {}

/**
 * What names one incarnation of PROOFGATE_STATE, for sidecars deciding whether their replica was
 * built from it: a random id the creator writes into the stream's description. The server's
 * `created` time is not enough: nats-server may report a new one after a clean restart of an
 * intact stream. A stream created without the id (by hand, or by an older writer that has not
 * added it yet) is named by `created`.
 */
export function streamIdentity(info: StreamInfo): string {
  const description = info.config.description ?? "";
  const tokens = TOKENS.exec(description)?.[1];
  // A stream keyed otherwise would be followed wrongly without a sound: lookups by subject miss,
  // erasures do not find their rows. Refused, so the sidecar stays unready and says why.
  if (tokens !== undefined && tokens !== customerTokenKeyId())
    throw new TokenKeyMismatchError(`${STATE_STREAM} was written with customer token key ${tokens}, this process has ${customerTokenKeyId()}: set the writer's --customer-token-key here too (docs/security.md)`);
  const m = INCARNATION.exec(description);
  return m?.[1] ? `incarnation=${m[1]}${tokens ? ` tokens=${tokens}` : ""}` : info.created;
}

/**
 * Creates the streams, or updates them when they exist (so upgrades can change limits). The
 * state stream keeps its incarnation id; one that has none gets one. It also names the customer
 * token key its subjects are made with: a writer whose key differs from a non-empty stream's
 * (a rotation, or the upgrade from unkeyed tokens) refuses with TokenKeyMismatchError until the
 * stream is deleted, and then republishes every document under the new key (docs/security.md).
 */
export async function ensureStreams(jsm: JetStreamManager, replicas = 1): Promise<void> {
  for (const config of streamConfigs(replicas)) {
    const name = config.name as string;
    const described = (existing?: StreamInfo): Partial<StreamConfig> => {
      if (name !== STATE_STREAM) return config;
      const description = existing?.config.description ?? "";
      const tokens = TOKENS.exec(description)?.[1];
      if (existing && existing.state.messages > 0 && tokens !== customerTokenKeyId())
        throw new TokenKeyMismatchError(
          `${STATE_STREAM} holds subjects made with ${tokens ? `customer token key ${tokens}` : "unkeyed customer tokens (an older proofgate)"}, this writer's key is ${customerTokenKeyId()}: ` +
            `to move to this key, delete the stream (nats stream rm ${STATE_STREAM}); the writer then republishes every document under it (docs/security.md, "Customer tokens")`,
        );
      const id = INCARNATION.exec(description)?.[1] ?? randomUUID();
      return { ...config, description: `${STATE_DESCRIPTION}; incarnation=${id}; tokens=${customerTokenKeyId()}` };
    };
    let info: StreamInfo;
    try {
      info = await jsm.streams.info(name);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      await jsm.streams.add(described());
      continue;
    }
    await jsm.streams.update(name, described(info));
  }
}
