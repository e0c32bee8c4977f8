import { parseArgs } from "node:util";
import type { LevelWithSilent } from "pino";
import { InvalidArgumentError } from "../errors/index.js";
import { LOG_LEVELS } from "../observability/logger.js";
import { formatDuration, parseDuration } from "./duration.js";

export { formatDuration, parseDuration } from "./duration.js";

/**
 * Every service option is both a `--flag` and a `PROOFGATE_*` environment variable, derived from
 * one declaration so the two cannot drift. Precedence: flag, then environment, then default.
 */
export interface Option<T> {
  readonly description: string;
  readonly default: T;
  readonly parse: (raw: string, name: string) => T;
  /** How the default reads in help and docs when it depends on the machine (e.g. "the host name"). */
  readonly shownDefault?: string;
  /** Writes a value the way `parse` reads it (durations: `5s`, not 5000). */
  format?(value: T): string;
}

export type OptionSpec = Record<string, Option<unknown>>;
export type OptionValues<S extends OptionSpec> = { [K in keyof S]: S[K] extends Option<infer T> ? T : never };

export const string = (description: string, def = ""): Option<string> => ({
  description,
  default: def,
  parse: (raw) => raw,
});

export const integer = (description: string, def: number, min = 0): Option<number> => ({
  description,
  default: def,
  parse: (raw, name) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(name, `must be an integer >= ${min}, got "${raw}"`);
    return n;
  },
});

export const boolean = (description: string, def = false): Option<boolean> => ({
  description,
  default: def,
  parse: (raw, name) => {
    if (["1", "true", "yes", "on"].includes(raw.toLowerCase())) return true;
    if (["0", "false", "no", "off", ""].includes(raw.toLowerCase())) return false;
    throw new InvalidArgumentError(name, `must be true or false, got "${raw}"`);
  },
});

export function oneOf<const T extends string>(description: string, values: readonly T[], def: T): Option<T> {
  return {
    description,
    default: def,
    parse: (raw, name) => {
      if ((values as readonly string[]).includes(raw)) return raw as T;
      throw new InvalidArgumentError(name, `must be one of ${values.join(", ")}, got "${raw}"`);
    },
  };
}

export const duration = (description: string, def: number): Option<number> => ({ description, default: def, parse: parseDuration, format: formatDuration });

export const logLevel = (): Option<LevelWithSilent> => oneOf("log level", LOG_LEVELS, "info");

/** Every option at its default. */
export function optionDefaults<S extends OptionSpec>(spec: S): OptionValues<S> {
  return Object.fromEntries(Object.entries(spec).map(([k, o]) => [k, o.default])) as OptionValues<S>;
}

/** How a default reads in `--help` and the docs: as a user would write it. */
function shownDefault(o: Option<unknown>): string | undefined {
  if (o.shownDefault) return o.shownDefault;
  if (o.default === "") return undefined;
  return o.format ? o.format(o.default) : JSON.stringify(o.default);
}

const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const envName = (key: string): string => `PROOFGATE_${flagName(key).replace(/-/g, "_").toUpperCase()}`;

export function loadOptions<S extends OptionSpec>(
  spec: S,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): OptionValues<S> {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: Object.fromEntries(Object.keys(spec).map((k) => [flagName(k), { type: "string" as const }])),
  });
  const out: Record<string, unknown> = {};
  for (const [key, option] of Object.entries(spec)) {
    const flag = values[flagName(key)];
    const fromEnv = env[envName(key)];
    if (typeof flag === "string") out[key] = option.parse(flag, `--${flagName(key)}`);
    else if (fromEnv !== undefined) out[key] = option.parse(fromEnv, envName(key));
    else out[key] = option.default;
  }
  return out as OptionValues<S>;
}

/** `--help` text: one line per option with its flag, variable and default. */
export function describeOptions(spec: OptionSpec): string {
  return Object.entries(spec)
    .map(([key, o]) => {
      const shown = shownDefault(o);
      const def = shown === undefined ? "" : ` (default: ${shown})`;
      return `  --${flagName(key)} / ${envName(key)}\n      ${o.description}${def}`;
    })
    .join("\n");
}

/** A Markdown table of the options: flag, variable, default, meaning. */
export function optionsMarkdown(spec: OptionSpec): string {
  const rows = Object.entries(spec).map(([key, o]) => {
    const shown = shownDefault(o);
    const def = shown === undefined ? "" : o.shownDefault ? shown : `\`${shown}\``;
    return `| \`--${flagName(key)}\` | \`${envName(key)}\` | ${def} | ${o.description.replace(/\|/g, "\\|")} |`;
  });
  return ["| flag | environment | default | meaning |", "|---|---|---|---|", ...rows].join("\n");
}
