import { decodeEventList, encodeEventList, type DecodedEvent } from "../../billing/index.js";
import { FailedPreconditionError, InvalidArgumentError } from "../../errors/index.js";
import { BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { IngestResult, IngestServiceService, type PublishRequest, type PublishResponse } from "../../gen/proofgate/v1/ingest.js";
import type { ServiceBinding } from "../../transport/grpc.js";
import { guardedUnary, type Gate } from "../../auth/index.js";
import type { Logger } from "../../observability/logger.js";
import type { WriterCore } from "../core.js";
import type { WriterMetrics } from "../metrics.js";
import type { OutboxPublisher } from "../outbox/publisher.js";
import type { InputFold, InputOutcome } from "../ha/fold.js";
import { HEADER_INPUT_ORIGIN, HEADER_INPUT_PRINCIPAL, HEADER_INPUT_RECEIVED_AT, INPUT_EVENTS_SUBJECT } from "../ha/inputs.js";

export const MAX_EVENTS_PER_PUBLISH = 1_000;

export interface IngestDeps {
  readonly core: WriterCore;
  readonly publisher: OutboxPublisher;
  readonly metrics: WriterMetrics;
  readonly logger: Logger;
  readonly publishTimeoutMs: number;
  /** The input stream every writer folds. */
  readonly fold: InputFold;
}

export interface IngestBindingDeps extends IngestDeps {
  readonly gate: Gate;
}

/**
 * Publish's request as the gRPC service receives it: each event decoded on its own
 * (billing/decode.ts), so a malformed one is rejected alone instead of failing the call.
 */
export interface PublishCall {
  readonly events: readonly DecodedEvent[];
}

/** Events built in process (the Stripe webhook) are whole already. */
function incoming(e: BillingEvent | DecodedEvent): DecodedEvent {
  return "payload" in e ? e : { event: e, payload: BillingEvent.encode(e).finish(), eventId: e.eventId };
}

/**
 * IngestService.Publish: the events are appended, as one message, to the input stream that every
 * writer folds (docs/writer.md, "High availability"); the answer waits until this writer has
 * applied them, each on its own, and their effects are on the state stream, and returns that
 * revision. If NATS cannot take them the call answers UNAVAILABLE and nothing was applied; if it
 * took them but they are not visible within the publish timeout, UNAVAILABLE too (they will be;
 * a retry answers DUPLICATE and the revision once replicated).
 */
export async function publish(deps: IngestDeps, request: PublishRequest | PublishCall, origin: "grpc" | "webhook" = "grpc", principal?: string): Promise<PublishResponse> {
  const { core } = deps;
  if (request.events.length > MAX_EVENTS_PER_PUBLISH)
    throw new InvalidArgumentError("events", `at most ${MAX_EVENTS_PER_PUBLISH} events per call, got ${request.events.length}`);
  if (!core.catalog) throw new FailedPreconditionError("no catalog yet: apply one with AdminService.ApplyCatalog before publishing events");
  const items = request.events.map(incoming);
  const meta: Record<string, string> = {
    [HEADER_INPUT_ORIGIN]: origin,
    [HEADER_INPUT_RECEIVED_AT]: String(core.now()),
    ...(principal === undefined ? {} : { [HEADER_INPUT_PRINCIPAL]: principal }),
  };
  // One input message per chunk that fits the server's max_payload (each event is applied on its
  // own either way); an event too large for any message is refused here, naming why. Events go
  // to the input stream as received, malformed ones too: every writer's fold rejects them alike.
  const limit = (deps.fold.maxInputBytes ?? Number.MAX_SAFE_INTEGER) - 64;
  const chunks: Uint8Array[][] = [];
  const tooLarge = new Map<number, string>();
  let chunk: Uint8Array[] = [];
  let bytes = 0;
  items.forEach((d, i) => {
    const size = d.payload.length + 8;
    if (size > limit) {
      tooLarge.set(i, `payload: ${size} bytes, above what the NATS server accepts in one message (${limit})`);
      return;
    }
    if (bytes + size > limit && chunk.length > 0) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(d.payload);
    bytes += size;
  });
  if (chunk.length > 0) chunks.push(chunk);
  const outcomes: (InputOutcome | undefined)[] = [];
  // A ledger that cannot be written answers what is wrong (the fold maps it: RESOURCE_EXHAUSTED for a full disk).
  for (const c of chunks) outcomes.push(await deps.fold.submit(INPUT_EVENTS_SUBJECT, encodeEventList(c, 1), meta, deps.publishTimeoutMs));
  const known = outcomes.filter((o): o is InputOutcome => o !== undefined);
  const outcome: InputOutcome | undefined =
    known.length === outcomes.length ? { applied: known.flatMap((o) => o.applied), outboxIds: known.flatMap((o) => o.outboxIds), duplicate: known.some((o) => o.duplicate) } : undefined;
  // Visibility gets its own budget: the append may have waited for NATS at start-up.
  const left = deps.publishTimeoutMs;
  // The same request sent again (within JetStream's duplicate window it is stored once): what the
  // first one accepted is a duplicate now. Folded before this writer kept its outcome: all of it is.
  const duplicate = (r: { eventId: string; result: IngestResult; reason: string }): typeof r =>
    r.result === IngestResult.INGEST_RESULT_ACCEPTED ? { ...r, result: IngestResult.INGEST_RESULT_DUPLICATE } : r;
  const folded = outcome
    ? outcome.applied.map((r) => (outcome.duplicate ? duplicate(r) : r))
    : items.filter((_, i) => !tooLarge.has(i)).map((d) => ({ eventId: d.eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "" }));
  let next = 0;
  const results = items.map((d, i) => {
    const reason = tooLarge.get(i);
    return reason !== undefined ? { eventId: d.eventId, result: IngestResult.INGEST_RESULT_REJECTED, reason } : (folded[next++] ?? { eventId: d.eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "" });
  });
  const outboxIds = outcome?.outboxIds ?? [];
  const revision = outboxIds.length > 0 ? await deps.publisher.waitFor(Math.max(...outboxIds), left) : await deps.publisher.waitForCommitted(left);
  return {
    // A rejection names the event's index too: `events[3].occurred_at: …`.
    results: results.map((r, i) => ({
      eventId: r.eventId || (items[i]?.eventId ?? ""),
      result: r.result,
      reason: r.result !== IngestResult.INGEST_RESULT_REJECTED ? r.reason : `events[${i}]${r.reason.startsWith("payload: ") ? r.reason.slice("payload".length) : `.${r.reason}`}`,
    })),
    revision,
  };
}

export function ingestBinding(deps: IngestBindingDeps): ServiceBinding {
  return {
    name: "proofgate.v1.IngestService",
    definition: {
      ...IngestServiceService,
      publish: { ...IngestServiceService.publish, requestDeserialize: (b: Buffer): PublishCall => ({ events: decodeEventList(b, 1, "events") }) },
    },
    implementation: {
      publish: guardedUnary(deps.gate, "IngestService.Publish", "ingest", deps.logger, (req: PublishCall, p) => publish(deps, req, "grpc", p.name)),
    },
  };
}
