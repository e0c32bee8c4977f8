/**
 * `proofgate <command>`: each command lives in its own module, loaded only when used so that
 * `proofgate check` does not pay for the writer's start-up.
 */
type Command = { run: (argv: string[]) => Promise<number>; summary: string };

const commands: Record<string, () => Promise<Command>> = {
  writer: () => import("./writer.js"),
  sidecar: () => import("./sidecar.js"),
  check: () => import("./check.js"),
  publish: () => import("./publish.js"),
  catalog: () => import("./catalog.js"),
  explain: () => import("./explain.js"),
  audit: () => import("./audit.js"),
  dev: () => import("./dev.js"),
  reconcile: () => import("./reconcile.js"),
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  // Operator commands that compute customer tokens (explain, audit --customer) use the services'
  // key; writer and sidecar set theirs again from their own option.
  const key = process.env["PROOFGATE_CUSTOMER_TOKEN_KEY"];
  if (key) (await import("../replication/subjects.js")).useCustomerTokenKey(key);
  const load = name ? commands[name] : undefined;
  if (!load) {
    const lines = await Promise.all(Object.entries(commands).map(async ([n, l]) => `  ${n.padEnd(10)} ${(await l()).summary}`));
    const out = name && name !== "--help" && name !== "help" ? console.error : console.log;
    if (name && name !== "--help" && name !== "help") out(`proofgate: unknown command "${name}"\n`);
    out(`usage: proofgate <command> [--help]\n\ncommands:\n${lines.join("\n")}`);
    return name && name !== "--help" && name !== "help" ? 2 : 0;
  }
  return (await load()).run(rest);
}
