import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { AdminServiceClient } from "../gen/proofgate/v1/admin.js";
import { CheckServiceClient } from "../gen/proofgate/v1/check.js";
import { IngestServiceClient } from "../gen/proofgate/v1/ingest.js";
import { unaryCall, type Invoke } from "../transport/grpc-client.js";

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
  /** gRPC addresses. */
  readonly writer: string;
  readonly sidecar: string;
  /** HTTP ops addresses (metrics, health; the writer's console). */
  readonly writerHttp: string;
  readonly sidecarHttp: string;
}

/** `PROOFGATE_DEV_FILE`, or one file per user in the temp directory. */
export function devEndpointsFile(): string {
  return process.env["PROOFGATE_DEV_FILE"] || join(tmpdir(), `proofgate-endpoints-${userInfo().uid}.json`);
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

const insecure = grpc.credentials.createInsecure();

/**
 * Where `proofgate dev` leaves the token of the writer it runs at `address` (owner-only file),
 * so the operator commands pointed at that writer authenticate with no extra step.
 */
export function devTokenPath(address: string, env: NodeJS.ProcessEnv = process.env): string {
  const config = env["XDG_CONFIG_HOME"] || join(homedir(), ".config");
  return join(config, "proofgate", "dev", `${address.replace(/[^A-Za-z0-9.-]/g, "_")}.token`);
}

/** The bearer token for the writer at `address`: PROOFGATE_TOKEN, the file PROOFGATE_TOKEN_FILE names, or the dev token. */
export function writerToken(address: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env["PROOFGATE_TOKEN"]) return env["PROOFGATE_TOKEN"].trim();
  const file = env["PROOFGATE_TOKEN_FILE"] || (existsSync(devTokenPath(address, env)) ? devTokenPath(address, env) : undefined);
  return file ? readFileSync(file, "utf8").trim() || undefined : undefined;
}

/** TLS to the writer when PROOFGATE_WRITER_CA names its CA; a client certificate too (mTLS) with PROOFGATE_CLIENT_CERT and _KEY. */
function writerCredentials(env: NodeJS.ProcessEnv): grpc.ChannelCredentials {
  const ca = env["PROOFGATE_WRITER_CA"];
  if (!ca) return insecure;
  const cert = env["PROOFGATE_CLIENT_CERT"];
  const key = env["PROOFGATE_CLIENT_KEY"];
  return grpc.credentials.createSsl(readFileSync(ca), key ? readFileSync(key) : null, cert ? readFileSync(cert) : null);
}

/** Adds `authorization: Bearer <token>` to every call. */
function bearer(token: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

export const writerClients = (address: string, token: string | undefined = writerToken(address), env: NodeJS.ProcessEnv = process.env) => {
  const credentials = writerCredentials(env);
  const options: grpc.ClientOptions = token ? { interceptors: [bearer(token)] } : {};
  return {
    ingest: new IngestServiceClient(address, credentials, options),
    admin: new AdminServiceClient(address, credentials, options),
  };
};

export const checkClient = (address: string): CheckServiceClient => new CheckServiceClient(address, insecure);

/**
 * A unary call for the operator commands, with a deadline and an error that reads as one line
 * (with a hint when the writer wants a token):
 * `call<CheckResponse>((md, opts, cb) => client.check(request, md, opts, cb))`.
 */
export async function call<Res>(invoke: Invoke<Res>, timeoutMs = 10_000): Promise<Res> {
  try {
    return await unaryCall(invoke, { timeoutMs });
  } catch (err) {
    const e = err as grpc.ServiceError;
    const hint = e.code === grpc.status.UNAUTHENTICATED ? " (set PROOFGATE_TOKEN or PROOFGATE_TOKEN_FILE; docs/security.md)" : "";
    throw new Error(`${grpc.status[e.code]}: ${e.details || e.message}${hint}`);
  }
}
