import { FailedPreconditionError, InvalidArgumentError } from "../../errors/index.js";
import { BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { IngestResult, IngestServiceService, PublishRequest, type PublishResponse } from "../../gen/proofgate/v1/ingest.js";
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
 * IngestService.Publish: the events are appended, as one message, to the input stream that every
 * writer folds (docs/writer.md, "High availability"); the answer waits until this writer has
 * applied them, each on its own, and their effects are on the state stream, and returns that
 * revision. If NATS cannot take them the call answers UNAVAILABLE and nothing was applied; if it
 * took them but they are not visible within the publish timeout, UNAVAILABLE too (they will be;
 * a retry answers DUPLICATE and the revision once replicated).
 */
export async function publish(deps: IngestDeps, request: PublishRequest, origin: "grpc" | "webhook" = "grpc", principal?: string): Promise<PublishResponse> {
  const { core } = deps;
  if (request.events.length > MAX_EVENTS_PER_PUBLISH)
    throw new InvalidArgumentError("events", `at most ${MAX_EVENTS_PER_PUBLISH} events per call, got ${request.events.length}`);
  if (!core.catalog) throw new FailedPreconditionError("no catalog yet: apply one with AdminService.ApplyCatalog before publishing events");
  const meta: Record<string, string> = {
    [HEADER_INPUT_ORIGIN]: origin,
    [HEADER_INPUT_RECEIVED_AT]: String(core.now()),
    ...(principal === undefined ? {} : { [HEADER_INPUT_PRINCIPAL]: principal }),
  };
  // One input message per chunk that fits the server's max_payload (each event is applied on its
  // own either way); an event too large for any message is refused here, naming why.
  const limit = (deps.fold.maxInputBytes ?? Number.MAX_SAFE_INTEGER) - 64;
  const chunks: BillingEvent[][] = [];
  const tooLarge = new Map<number, string>();
  let chunk: BillingEvent[] = [];
  let bytes = 0;
  request.events.forEach((e, i) => {
    const size = BillingEvent.encode(e).finish().length + 8;
    if (size > limit) {
      tooLarge.set(i, `event: ${size} bytes, above what the NATS server accepts in one message (${limit})`);
      return;
    }
    if (bytes + size > limit && chunk.length > 0) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(e);
    bytes += size;
  });
  if (chunk.length > 0) chunks.push(chunk);
  const outcomes: (InputOutcome | undefined)[] = [];
  for (const c of chunks) outcomes.push(await deps.fold.submit(INPUT_EVENTS_SUBJECT, PublishRequest.encode({ events: c }).finish(), meta, deps.publishTimeoutMs));
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
    : request.events.filter((_, i) => !tooLarge.has(i)).map((e) => ({ eventId: e.eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "" }));
  let next = 0;
  const results = request.events.map((e, i) => {
    const reason = tooLarge.get(i);
    return reason !== undefined ? { eventId: e.eventId, result: IngestResult.INGEST_RESULT_REJECTED, reason } : (folded[next++] ?? { eventId: e.eventId, result: IngestResult.INGEST_RESULT_DUPLICATE, reason: "" });
  });
  const outboxIds = outcome?.outboxIds ?? [];
  const revision = outboxIds.length > 0 ? await deps.publisher.waitFor(Math.max(...outboxIds), left) : await deps.publisher.waitForCommitted(left);
  return {
    results: results.map((r) => ({ eventId: r.eventId, result: r.result, reason: r.reason })),
    revision,
  };
}

export function ingestBinding(deps: IngestBindingDeps): ServiceBinding {
  return {
    name: "proofgate.v1.IngestService",
    definition: IngestServiceService,
    implementation: {
      publish: guardedUnary(deps.gate, "IngestService.Publish", "ingest", deps.logger, (req: PublishRequest, p) => publish(deps, req, "grpc", p.name)),
    },
  };
}
