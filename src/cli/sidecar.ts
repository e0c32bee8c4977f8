import { describeOptions, loadOptions } from "../config/options.js";
import { createLogger } from "../observability/logger.js";
import { sidecarOptionSpec, startSidecar } from "../sidecar/index.js";
import { applySidecarV8Flags } from "../sidecar/options.js";
import { removeReadyFile, writeReadyFile } from "../transport/ready-file.js";
import { untilStopSignal } from "./signals.js";

export const summary = "run the sidecar service (SQLite replica + gRPC Check on localhost)";

const HELP = `usage: proofgate sidecar [options]

Follows the PROOFGATE_STATE stream into a local SQLite replica and answers CheckService
(Check, CheckBatch, ListEntitlements) over gRPC on localhost, from the replica alone.
Readiness (grpc.health.v1, GET /readyz) turns on once the initial sync has caught up.

options (flag / environment variable):
${describeOptions(sidecarOptionSpec)}
`;

export async function run(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(HELP);
    return 0;
  }
  applySidecarV8Flags();
  const options = loadOptions(sidecarOptionSpec, argv);
  const logger = createLogger({ level: options.logLevel, name: "proofgate-sidecar" });
  const sidecar = await startSidecar(options, logger);
  writeReadyFile(options.readyFile, { grpc: sidecar.grpcAddresses, http: sidecar.httpAddress });
  logger.info({ signal: await untilStopSignal() }, "shutdown requested");
  removeReadyFile(options.readyFile);
  await sidecar.close();
  return 0;
}
