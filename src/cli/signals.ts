/**
 * Resolves with the first SIGINT or SIGTERM, then stops listening, so a second signal gets
 * Node's default (immediate exit) while a graceful shutdown runs.
 */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve(signal);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
