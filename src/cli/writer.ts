import { describeOptions, loadOptions } from "../config/options.js";
import { createLogger } from "../observability/logger.js";
import { errorMessage } from "../errors/index.js";
import { startWriter, writerOptionSpec, type WriterDeps } from "../writer/index.js";
import { removeReadyFile, writeReadyFile } from "../transport/ready-file.js";
import { untilStopSignal } from "./signals.js";

export const summary = "run the writer service";

const HELP = `usage: proofgate writer [options]

The writer: consumes billing events (NATS PROOFGATE_BILLING and gRPC IngestService), keeps the
SQLite ledger, and replicates access documents to PROOFGATE_STATE. See docs/writer.md.

options (flag / environment variable):
${describeOptions(writerOptionSpec)}`;

/** `deps` lets a test entry module hand in fault hooks; the production binary passes none. */
export async function run(argv: string[], deps: WriterDeps = {}): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(HELP);
    return 0;
  }
  let options;
  try {
    options = loadOptions(writerOptionSpec, argv);
  } catch (err) {
    console.error(`proofgate writer: ${errorMessage(err)}\n\n${HELP}`);
    return 2;
  }
  const logger = createLogger({ level: options.logLevel, name: "proofgate-writer" });
  let writer;
  try {
    writer = await startWriter(options, logger, deps);
  } catch (err) {
    logger.fatal({ err: errorMessage(err) }, "writer did not start");
    console.error(`proofgate writer: ${errorMessage(err)}`);
    return 1;
  }
  writeReadyFile(options.readyFile, { grpc: [writer.grpcAddress], http: writer.httpAddress });
  logger.info({ signal: await untilStopSignal() }, "shutdown requested");
  removeReadyFile(options.readyFile);
  await writer.close();
  return 0;
}
