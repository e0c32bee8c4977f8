import { parseArgs } from "node:util";
import { DEMO_CATALOG_PATH } from "../catalog/index.js";
import { createLogger } from "../observability/logger.js";
import { parseDuration } from "../config/options.js";
import { DevAborted, DevSetupError, runDev } from "../dev/index.js";

export const summary = "run the whole system on this machine: NATS, writer, sidecar, demo catalog and story";


const USAGE = `usage: proofgate dev [--catalog FILE] [--story-period 8s | --no-story] [--log-level error]
                     [--writer-grpc 127.0.0.1:50051] [--writer-http 127.0.0.1:9090]
                     [--sidecar-grpc 127.0.0.1:50061] [--sidecar-http 127.0.0.1:9091]

Starts nats-server with JetStream in a temporary directory on a free port (or uses
PROOFGATE_NATS_URL), a writer and a sidecar, loads the demo catalog, replays a short story of
a customer's payments printing each decision, then keeps serving until Ctrl-C. Port 0 picks a
free port.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      catalog: { type: "string" },
      "story-period": { type: "string" },
      "no-story": { type: "boolean" },
      "log-level": { type: "string" },
      "writer-grpc": { type: "string" },
      "writer-http": { type: "string" },
      "sidecar-grpc": { type: "string" },
      "sidecar-http": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  // Services log through pino; at "error" the story stays readable.
  const logger = createLogger({ level: (v["log-level"] ?? "error") as "error" });
  // Ctrl-C (or SIGTERM) stops everything at any moment, also while starting or telling the story;
  // a second one kills at once.
  const controller = new AbortController();
  const stop = (): void => {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    console.log("\nstopping…");
    controller.abort();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  let system;
  try {
    system = await runDev(
      {
        natsUrl: process.env["PROOFGATE_NATS_URL"] || undefined,
        writerGrpc: v["writer-grpc"] ?? "127.0.0.1:50051",
        writerHttp: v["writer-http"] ?? "127.0.0.1:9090",
        sidecarGrpc: v["sidecar-grpc"] ?? "127.0.0.1:50061",
        sidecarHttp: v["sidecar-http"] ?? "127.0.0.1:9091",
        catalogPath: v.catalog ?? DEMO_CATALOG_PATH,
        storyPeriodMs: v["no-story"] ? 0 : parseDuration(v["story-period"] ?? "8s", "--story-period"),
        signal: controller.signal,
      },
      (...lines) => {
        for (const l of lines) console.log(l);
      },
      logger,
    );
  } catch (err) {
    if (err instanceof DevAborted) {
      // Stopped while starting: runDev has closed what it had started.
      console.log("stopped.");
      return 0;
    }
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    if (err instanceof DevSetupError) {
      console.error(`proofgate dev: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const { signal } = controller;
  if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  await system.close();
  console.log("stopped.");
  return 0;
}
