import { inspect } from "node:util";

export const DAY = 86_400_000;

export interface WaitOptions {
  /** What is awaited, for the failure message. */
  readonly what?: string;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
}

/**
 * Polls `probe` until it returns something other than undefined, null or false, and returns
 * that. A probe that throws is retried. Fails after the timeout (default 15 s) naming what was
 * awaited and the last value or error seen. Tests await conditions, never fixed sleeps.
 *
 * The second argument is what is awaited (`waitFor(p, "readiness", 30_000)`) or options
 * (`waitFor(p, { what: "readiness", timeoutMs: 30_000 })`).
 */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  whatOrOptions: string | WaitOptions = {},
  timeoutMs?: number,
): Promise<Exclude<T, undefined | null | false>> {
  const o: WaitOptions = typeof whatOrOptions === "string" ? { what: whatOrOptions, ...(timeoutMs === undefined ? {} : { timeoutMs }) } : whatOrOptions;
  const limit = o.timeoutMs ?? 15_000;
  const deadline = Date.now() + limit;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== null && v !== false) return v as Exclude<T, undefined | null | false>;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : inspect(last, { depth: 4 });
      throw new Error(`timed out after ${limit} ms waiting for ${o.what ?? "a condition"}; last: ${seen}`);
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 20));
  }
}
