import { decodeEventList, type DecodedEvent } from "../../billing/index.js";
import { FailedPreconditionError, InvalidArgumentError, storageError } from "../../errors/index.js";
import { BillingEvent } from "../../gen/proofgate/v1/billing.js";
import { IngestResult, IngestServiceService, type PublishRequest, type PublishResponse } from "../../gen/proofgate/v1/ingest.js";
import type { ServiceBinding } from "../../transport/grpc.js";
import { guardedUnary, type Gate } from "../../auth/index.js";
import type { Logger } from "../../observability/logger.js";
import type { WriterCore } from "../core.js";
import type { WriterMetrics } from "../metrics.js";
import type { OutboxPublisher } from "../outbox/publisher.js";
import { applyEvents } from "./apply.js";

export const MAX_EVENTS_PER_PUBLISH = 1_000;

export interface IngestDeps {
  readonly core: WriterCore;
  readonly publisher: OutboxPublisher;
  readonly metrics: WriterMetrics;
  readonly logger: Logger;
  readonly publishTimeoutMs: number;
  /** Wakes the publishers after a commit. */
  readonly committed: () => void;
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
 * IngestService.Publish: the events are applied in order, each on its own, in one ledger commit;
 * the answer waits until their effects are on the state stream and returns that revision. If NATS
 * is away the events stay committed and the call answers UNAVAILABLE after the publish timeout
 * (a retry answers DUPLICATE and the revision once replicated).
 */
export async function publish(deps: IngestDeps, request: PublishRequest | PublishCall, origin: "grpc" | "webhook" = "grpc", principal?: string): Promise<PublishResponse> {
  const { core } = deps;
  if (request.events.length > MAX_EVENTS_PER_PUBLISH)
    throw new InvalidArgumentError("events", `at most ${MAX_EVENTS_PER_PUBLISH} events per call, got ${request.events.length}`);
  if (!core.catalog) throw new FailedPreconditionError("no catalog yet: apply one with AdminService.ApplyCatalog before publishing events");
  const items = request.events.map(incoming);
  let results;
  try {
    results = applyEvents(
      core,
      items.map((d) => ({
        event: d.event,
        ...(d.error ? { decodeError: d.error.message } : {}),
        origin,
        ...(principal === undefined ? {} : { principal }),
        payload: d.payload,
        contentType: "application/protobuf",
      })),
      origin,
      deps.metrics,
    );
  } catch (err) {
    throw storageError(err, "ledger") ?? err;
  }
  const outboxIds = results.flatMap((r) => (r.outboxId === undefined ? [] : [r.outboxId]));
  if (outboxIds.length > 0) core.hooks.afterEventCommit?.();
  deps.committed();
  const revision =
    outboxIds.length > 0
      ? await deps.publisher.waitFor(Math.max(...outboxIds), deps.publishTimeoutMs)
      : await deps.publisher.waitForCommitted(deps.publishTimeoutMs);
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
