/**
 * A log-linear latency histogram in the spirit of HdrHistogram: values (nanoseconds) are kept
 * exact below 256 and otherwise in buckets 1/128 of their power of two wide, so any percentile
 * is within 0.8% of the true value whatever the range, in a fixed 6,000-slot array. Cheap to
 * record into (no allocation), to merge, and to send between processes (sparse pairs).
 */
const SUB_BITS = 8;
const SUB = 1 << SUB_BITS; // values below this are exact
const HALF = SUB >> 1; // sub-buckets per power of two above it
const SLOTS = SUB + 48 * HALF;

export interface HistogramJson {
  readonly counts: readonly (readonly [number, number])[];
  /** null once through JSON when nothing was recorded. */
  readonly min: number | null;
  readonly max: number;
  readonly sum: number;
}

export interface Summary {
  readonly count: number;
  /** Microseconds, rounded to 0.1. */
  readonly min_us: number;
  readonly mean_us: number;
  readonly p50_us: number;
  readonly p90_us: number;
  readonly p99_us: number;
  readonly p999_us: number;
  readonly max_us: number;
}

function indexOf(v: number): number {
  if (v < SUB) return v < 0 ? 0 : Math.floor(v);
  const e = Math.floor(Math.log2(v)) - SUB_BITS + 1;
  let m = Math.floor(v / 2 ** e);
  // Floating point at exact powers of two.
  if (m >= SUB) m = SUB - 1;
  if (m < HALF) m = HALF;
  const i = SUB + (e - 1) * HALF + (m - HALF);
  return i < SLOTS ? i : SLOTS - 1;
}

/** The highest value that lands in slot `i`. */
function highestOf(i: number): number {
  if (i < SUB) return i;
  const k = i - SUB;
  const e = Math.floor(k / HALF) + 1;
  const m = (k % HALF) + HALF;
  return (m + 1) * 2 ** e - 1;
}

export class Histogram {
  private counts = new Float64Array(SLOTS);
  count = 0;
  min = Infinity;
  max = 0;
  sum = 0;

  record(ns: number): void {
    const i = indexOf(ns);
    this.counts[i] = (this.counts[i] as number) + 1;
    this.count++;
    this.sum += ns;
    if (ns < this.min) this.min = ns;
    if (ns > this.max) this.max = ns;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.min = Infinity;
    this.max = 0;
    this.sum = 0;
  }

  merge(other: Histogram): this {
    for (let i = 0; i < SLOTS; i++) this.counts[i] = (this.counts[i] as number) + (other.counts[i] as number);
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
    return this;
  }

  /** Nanoseconds at percentile `p` (0..100): the highest value of the slot that holds it, capped at the max seen. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < SLOTS; i++) {
      seen += this.counts[i] as number;
      if (seen >= rank) return Math.min(highestOf(i), this.max);
    }
    return this.max;
  }

  summary(): Summary {
    const us = (ns: number): number => (Number.isFinite(ns) ? Math.round(ns / 100) / 10 : NaN);
    return {
      count: this.count,
      min_us: us(this.count ? this.min : NaN),
      mean_us: us(this.count ? this.sum / this.count : NaN),
      p50_us: us(this.percentile(50)),
      p90_us: us(this.percentile(90)),
      p99_us: us(this.percentile(99)),
      p999_us: us(this.percentile(99.9)),
      max_us: us(this.count ? this.max : NaN),
    };
  }

  toJSON(): HistogramJson {
    const counts: [number, number][] = [];
    for (let i = 0; i < SLOTS; i++) {
      const c = this.counts[i] as number;
      if (c) counts.push([i, c]);
    }
    return { counts, min: this.min, max: this.max, sum: this.sum };
  }

  static fromJSON(j: HistogramJson): Histogram {
    const h = new Histogram();
    for (const [i, c] of j.counts) {
      h.counts[i] = c;
      h.count += c;
    }
    h.min = j.min ?? Infinity;
    h.max = j.max;
    h.sum = j.sum;
    return h;
  }
}
