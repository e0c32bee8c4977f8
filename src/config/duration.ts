import { InvalidArgumentError } from "../errors/index.js";

const UNITS = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1_000],
  ["ms", 1],
] as const;

/** Durations as `250ms`, `30s`, `5m`, `2h`, `7d`; a bare number is milliseconds. */
export function parseDuration(raw: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(raw.trim());
  if (!m?.[1]) throw new InvalidArgumentError(name, `must be a duration like 500ms, 30s, 5m, 2h or 7d, got "${raw}"`);
  const unit = UNITS.find(([u]) => u === (m[2] ?? "ms"))?.[1] ?? 1;
  return Math.round(Number(m[1]) * unit);
}

/** The way people write durations (and parseDuration reads them): 300000 → `5m`, 1500 → `1500ms`. */
export function formatDuration(ms: number): string {
  const [unit, size] = UNITS.find(([, size]) => ms !== 0 && ms % size === 0) ?? ["ms", 1];
  return `${ms / size}${unit}`;
}
