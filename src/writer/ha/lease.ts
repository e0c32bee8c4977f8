import { performance } from "node:perf_hooks";
import type { KV } from "nats";
import { errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import type { NatsLink } from "../nats-link.js";
import { Signal } from "../signal.js";

/** The KV bucket holding the leader lease (one key); its TTL is the lease's. */
export const LEASE_BUCKET = "proofgate-writer-lease";
export const LEASE_KEY = "leader";

export interface LeaseOptions {
  /** How long an unrenewed lease lasts on the server (the bucket's TTL). */
  readonly ttlMs: number;
  readonly writerId: string;
  readonly ledgerId: () => string;
  readonly replicas: number;
  /** Whether this writer may lead now (its fold is caught up with the input stream). */
  readonly canLead: () => boolean;
  readonly logger: Logger;
  /** Called on every change of leadership (acquired: the epoch; lost: undefined). */
  readonly onChange?: (epoch: number | undefined) => void;
}

interface LeaseValue {
  readonly writerId: string;
  readonly ledgerId: string;
}

/**
 * The leader lease (docs/writer.md, "High availability"): one key in a NATS KV bucket whose TTL is
 * the lease time. A standby takes it with `create` once it has expired; the leader renews it with
 * `update` at the revision it last wrote, so a lease taken over by another writer can never be
 * renewed. The epoch is the KV revision at which the lease was taken: it grows with every new
 * leader and is carried on every message the leader publishes.
 *
 * Validity is judged by this process's own monotonic clock, counted from when a renewal was
 * *sent*: `leading()` turns false `ttl - renewInterval` after the last successful renewal was
 * started, which is before the server can expire the key. A writer that was paused (SIGSTOP, a
 * long GC, a frozen VM) therefore sees its lease lapsed the moment it resumes, before it publishes
 * anything; the state stream's expected-last-sequence check and the new leader's fence (see
 * outbox/publisher.ts) hold even if it does not.
 */
export class Lease {
  private epochValue: number | undefined;
  private revision = 0;
  private validUntil = 0;
  private kv: KV | undefined;
  private kvOf: unknown;
  private readonly stop = new AbortController();
  private readonly signal = new Signal();
  private loop: Promise<void> | undefined;
  private readonly renewMs: number;

  constructor(
    private readonly link: NatsLink,
    private readonly options: LeaseOptions,
  ) {
    this.renewMs = Math.max(50, Math.floor(options.ttlMs / 4));
  }

  /** The epoch while this writer holds a lease that is still valid by its own clock; else undefined. */
  leading(): number | undefined {
    if (this.epochValue === undefined) return undefined;
    return performance.now() < this.validUntil ? this.epochValue : undefined;
  }

  /** The epoch of the lease this writer holds (valid or lapsed), for logs. */
  get held(): number | undefined {
    return this.epochValue;
  }

  start(): void {
    this.link.onReady(() => this.signal.kick());
    this.loop = this.run();
  }

  /** Runs a round now (e.g. the fold just caught up). */
  kick(): void {
    this.signal.kick();
  }

  /** Gives the lease up (a newer leader published, or shutdown). */
  stepDown(reason: string): void {
    if (this.epochValue === undefined) return;
    this.options.logger.warn({ epoch: this.epochValue, reason }, "stepping down: standby");
    this.epochValue = undefined;
    this.validUntil = 0;
    this.options.onChange?.(undefined);
  }

  /** Stops renewing; a held lease is deleted so a standby takes over at once instead of after the TTL. */
  async close(): Promise<void> {
    this.stop.abort();
    this.signal.kick();
    await this.loop;
    const held = this.epochValue;
    this.stepDown("shutting down");
    if (held !== undefined && this.kv) await this.kv.delete(LEASE_KEY, { previousSeq: this.revision }).catch(() => undefined);
  }

  private value(): Uint8Array {
    const v: LeaseValue = { writerId: this.options.writerId, ledgerId: this.options.ledgerId() };
    return Buffer.from(JSON.stringify(v));
  }

  private async bucket(): Promise<KV | undefined> {
    const h = this.link.ready;
    if (!h) return undefined;
    if (this.kv && this.kvOf === h.nc) return this.kv;
    this.kv = await h.js.views.kv(LEASE_BUCKET, { ttl: this.options.ttlMs, history: 1, replicas: this.options.replicas });
    this.kvOf = h.nc;
    return this.kv;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stop.signal.aborted) {
      try {
        await this.round();
        failures = 0;
      } catch (err) {
        if (failures++ % 20 === 0) this.options.logger.warn({ err: errorMessage(err) }, "lease round failed; retrying");
      }
      await this.signal.wait(this.renewMs);
    }
  }

  private async round(): Promise<void> {
    const kv = await this.bucket();
    if (!kv || this.stop.signal.aborted) return;
    const sent = performance.now();
    if (this.epochValue !== undefined) {
      try {
        this.revision = await kv.update(LEASE_KEY, this.value(), this.revision);
        this.validUntil = sent + this.options.ttlMs - this.renewMs;
      } catch (err) {
        // A revision mismatch means someone else took the key: the lease is gone for good. Any
        // other failure (a timeout) leaves it to lapse by the clock unless a later renewal works.
        if (/wrong last sequence/i.test(errorMessage(err))) this.stepDown("the lease was taken over");
        else throw err;
      }
      return;
    }
    if (!this.options.canLead()) return;
    let revision: number;
    try {
      revision = await kv.create(LEASE_KEY, this.value());
    } catch (err) {
      if (!/wrong last sequence|key exists/i.test(errorMessage(err))) throw err;
      // Held. By this ledger? Then its holder is dead: one process per ledger file (the ledger is
      // locked), so a restarted writer takes its own lease back without waiting for the TTL.
      const e = await kv.get(LEASE_KEY);
      if (!e || e.operation !== "PUT") return;
      let holder: Partial<LeaseValue> = {};
      try {
        holder = JSON.parse(e.string()) as Partial<LeaseValue>;
      } catch {
        return;
      }
      if (holder.ledgerId !== this.options.ledgerId()) return;
      revision = await kv.update(LEASE_KEY, this.value(), e.revision);
    }
    this.revision = revision;
    this.epochValue = revision;
    this.validUntil = sent + this.options.ttlMs - this.renewMs;
    this.options.logger.info({ epoch: revision, writerId: this.options.writerId }, "lease acquired: leader");
    this.options.onChange?.(revision);
  }
}
