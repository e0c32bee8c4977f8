/** What a run does: `--quick` (about a minute) or the full run (1M customers). */
export interface Config {
  readonly quick: boolean;
  /** Customers in the sidecar's replica. */
  readonly customers: number;
  /** Distinct generated billing histories (customers share them, each with its own id). */
  readonly templates: number;
  /** Unacknowledged JetStream publishes while seeding. */
  readonly seedWindow: number;
  /** Document updates in each burst. */
  readonly burst: number;
  /** The paced burst's rate (documents/s): above what one writer sustains. The other burst is as fast as JetStream takes it. */
  readonly burstRate: number;
  /** Checks/s offered during the bootstrap and the burst. */
  readonly backgroundRate: number;
  /** Quiet period after the bootstrap (checks at backgroundRate continue). */
  readonly restMs: number;
  readonly check: {
    readonly durationMs: number;
    readonly warmupMs: number;
    /** Callers in flight for the closed loop with N callers. */
    readonly concurrency: number;
    readonly rates: readonly number[];
    /** Fractions of the closed-loop maximum tried to find the highest rate that still meets p99 ≤ 1 ms. */
    readonly sustainFractions: readonly number[];
    readonly transports: readonly ("tcp" | "unix")[];
    /** Customers asked about in the hot-set rows (and the client's hot set): the first N, as a product service's active sessions would. */
    readonly hotSet: number;
    /**
     * Each scenario runs as this many echo/sidecar pairs, alternating, each a share of `durationMs`, and is reported pooled:
     * the machine's speed drifts by more than the ratios judged, and alternating gives both sides the same drift.
     */
    readonly rounds: number;
  };
  readonly warmRestarts: number;
  /** Cold sidecars started at once in the herd (snapshot and herd suites); 0: no herd (`--herd`). */
  readonly herd: number;
  /** The pod profile: the sidecar and the echo floor each under this CPU quota and memory limit, checks at `rate`/s. */
  readonly pod: { readonly cpuMillis: number; readonly memoryBytes: number; readonly atRestMs: number; readonly rate: number };
  readonly e2e: {
    readonly rate: number;
    readonly durationMs: number;
    readonly ladder: readonly number[];
    readonly ladderMs: number;
    readonly customers: number;
  };
  readonly ingest: {
    readonly batches: readonly number[];
    readonly concurrencies: readonly number[];
    readonly durationMs: number;
    readonly warmupMs: number;
    readonly natsCount: number;
    readonly customers: number;
  };
  readonly evaluate: { readonly docs: number; readonly ms: number };
  /** Writer CPU per event by history length: facts per customer, customers per length, measured events per length. */
  readonly history: { readonly facts: readonly number[]; readonly customers: number; readonly events: number };
}

export function config(quick: boolean, customers?: number): Config {
  if (quick) {
    return {
      quick,
      customers: customers ?? 50_000,
      templates: 1024,
      seedWindow: 2_000,
      burst: 10_000,
      burstRate: 5_000,
      backgroundRate: 1_000,
      restMs: 1_000,
      check: { durationMs: 700, warmupMs: 200, concurrency: 16, rates: [500, 2_000], sustainFractions: [0.2, 0.5, 0.8], transports: ["tcp", "unix"], hotSet: 1_000, rounds: 3 },
      warmRestarts: 1,
      herd: 4,
      // Checks at 250/s: on a busy machine 1,000/s alone costs most of a 500m quota (see BENCHMARKS.md).
      pod: { cpuMillis: 500, memoryBytes: 384 * 2 ** 20, atRestMs: 3_000, rate: 250 },
      e2e: { rate: 200, durationMs: 3_000, ladder: [1_000], ladderMs: 1_500, customers: 2_000 },
      ingest: { batches: [1, 10, 100], concurrencies: [8], durationMs: 1_000, warmupMs: 200, natsCount: 5_000, customers: 5_000 },
      evaluate: { docs: 10_000, ms: 100 },
      history: { facts: [10, 100, 1_000], customers: 10, events: 500 },
    };
  }
  return {
    quick,
    customers: customers ?? 1_000_000,
    templates: 4096,
    seedWindow: 4_000,
    burst: 100_000,
    burstRate: 5_000,
    backgroundRate: 1_000,
    restMs: 3_000,
    check: { durationMs: 8_000, warmupMs: 2_000, concurrency: 16, rates: [500, 2_000], sustainFractions: [0.1, 0.2, 0.4, 0.6, 0.8, 1], transports: ["tcp", "unix"], hotSet: 1_000, rounds: 4 },
    warmRestarts: 3,
    herd: 20,
    pod: { cpuMillis: 500, memoryBytes: 384 * 2 ** 20, atRestMs: 10_000, rate: 1_000 },
    e2e: { rate: 200, durationMs: 30_000, ladder: [500, 1_000, 2_000, 3_000, 4_000], ladderMs: 10_000, customers: 10_000 },
    ingest: { batches: [1, 10, 100], concurrencies: [1, 16], durationMs: 10_000, warmupMs: 1_000, natsCount: 50_000, customers: 20_000 },
    evaluate: { docs: 100_000, ms: 1_000 },
    history: { facts: [10, 100, 1_000], customers: 50, events: 5_000 },
  };
}
