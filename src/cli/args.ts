import { parseArgs, type ParseArgsConfig } from "node:util";

/** Operator commands: flags only (no environment), with `--help` from the same table. */
export function parseCommand<O extends NonNullable<ParseArgsConfig["options"]>>(
  argv: string[],
  options: O,
  usage: string,
): { values: ReturnType<typeof parseArgs<{ options: O; allowPositionals: true }>>["values"]; positionals: string[]; help: boolean } {
  const parsed = parseArgs({ args: argv, options: { ...options, help: { type: "boolean" } }, allowPositionals: true, strict: true });
  const help = (parsed.values as { help?: boolean }).help === true;
  if (help) console.log(usage);
  return { values: parsed.values as never, positionals: parsed.positionals, help };
}

export function required(value: string | undefined, flag: string): string {
  if (!value) throw new Error(`${flag} is required (see --help)`);
  return value;
}
