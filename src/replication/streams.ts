import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from "nats";
import {
  AUDIT_HEAD_SUBJECT,
  AUDIT_STREAM,
  BILLING_STREAM,
  BILLING_SUBJECTS,
  DEADLETTER_STREAM,
  DEADLETTER_SUBJECT,
  STATE_STREAM,
  STATE_SUBJECTS,
} from "./subjects.js";

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

/** Creates the streams, or updates them when they exist (so upgrades can change limits). */
export async function ensureStreams(jsm: JetStreamManager, replicas = 1): Promise<void> {
  for (const config of streamConfigs(replicas)) {
    const name = config.name as string;
    try {
      await jsm.streams.info(name);
      await jsm.streams.update(name, config);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      await jsm.streams.add(config);
    }
  }
}

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof Error && /stream not found/i.test(err.message);
}
