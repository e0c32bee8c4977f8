import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { AdminServiceClient } from "../gen/proofgate/v1/admin.js";
import { CheckServiceClient } from "../gen/proofgate/v1/check.js";
import { IngestServiceClient } from "../gen/proofgate/v1/ingest.js";

/** Default addresses match the services' loopback defaults. */
export const DEFAULT_WRITER = "127.0.0.1:50051";
export const DEFAULT_SIDECAR = "127.0.0.1:50061";
export const DEFAULT_NATS = "nats://127.0.0.1:4222";

// ---------------------------------------------------------------------------------------------
// Where the services are: a flag, else an environment variable, else a running `proofgate dev`
// (which writes its addresses to a file, as nats-server writes its ports file), else the default.

/** What `proofgate dev` writes while it runs, so operator commands in another terminal find it. */
export interface DevEndpoints {
  readonly pid: number;
  readonly natsUrl: string;
  readonly writer: string;
  readonly sidecar: string;
}

/** `PROOFGATE_DEV_FILE`, or one file per user in the temp directory. */
export function devEndpointsFile(): string {
  return process.env["PROOFGATE_DEV_FILE"] || join(tmpdir(), `proofgate-dev-${userInfo().uid}.json`);
}

export function writeDevEndpoints(e: DevEndpoints): void {
  writeFileSync(devEndpointsFile(), `${JSON.stringify(e)}\n`, { mode: 0o600 });
}

/** Removes the file if it is still this process's (a second dev may have replaced it). */
export function removeDevEndpoints(): void {
  if (readDevEndpoints()?.pid === process.pid) rmSync(devEndpointsFile(), { force: true });
}

/** The running dev's addresses; undefined when there is none (or its process has gone). */
export function readDevEndpoints(): DevEndpoints | undefined {
  let e: DevEndpoints;
  try {
    e = JSON.parse(readFileSync(devEndpointsFile(), "utf8")) as DevEndpoints;
  } catch {
    return undefined;
  }
  try {
    process.kill(e.pid, 0);
  } catch {
    return undefined; // left behind by a dev that was killed
  }
  return e;
}

export const writerAddress = (flag: string | undefined): string =>
  flag ?? process.env["PROOFGATE_WRITER_ADDRESS"] ?? readDevEndpoints()?.writer ?? DEFAULT_WRITER;
export const sidecarAddress = (flag: string | undefined): string =>
  flag ?? process.env["PROOFGATE_SIDECAR_ADDRESS"] ?? readDevEndpoints()?.sidecar ?? DEFAULT_SIDECAR;
export const natsUrl = (flag: string | undefined): string =>
  flag ?? process.env["PROOFGATE_NATS_URL"] ?? readDevEndpoints()?.natsUrl ?? DEFAULT_NATS;

/** A URL fit for messages: credentials replaced. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

// ---------------------------------------------------------------------------------------------
// gRPC clients

const credentials = grpc.credentials.createInsecure();

export const writerClients = (address: string) => ({
  ingest: new IngestServiceClient(address, credentials),
  admin: new AdminServiceClient(address, credentials),
});

export const checkClient = (address: string): CheckServiceClient => new CheckServiceClient(address, credentials);

type Callback<Res> = (err: grpc.ServiceError | null, res: Res) => void;

/**
 * A unary call as a promise, with a deadline so a CLI never hangs on a dead address:
 * `call<CheckResponse>((md, opts, cb) => client.check(request, md, opts, cb))`.
 */
export function call<Res>(invoke: (metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, cb: Callback<Res>) => unknown, timeoutMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke(new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) {
        reject(new Error(`${grpc.status[err.code]}: ${err.details || err.message}`));
        return;
      }
      resolve(res);
    });
  });
}
