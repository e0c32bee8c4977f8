import { fileURLToPath } from "node:url";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { HealthImplementation } from "grpc-health-check";
import { ReflectionService } from "@grpc/reflection";
import { InvalidArgumentError, ProofgateError, bounded, errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";

/** `proto/` at the package root; the same relative path from `src/transport` and `dist/transport`. */
export const PROTO_DIR = fileURLToPath(new URL("../../proto", import.meta.url));

export interface ServiceBinding {
  /** Fully qualified name, e.g. `proofgate.v1.CheckService`, used for health status. */
  readonly name: string;
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

/**
 * The one place where errors become gRPC statuses: a `ProofgateError` keeps its code and message;
 * anything else is a bug, logged with its stack and answered as INTERNAL without details.
 */
export function toServiceError(err: unknown, logger: Logger): Partial<grpc.StatusObject> {
  if (err instanceof ProofgateError) return { code: err.code, details: err.message };
  logger.error({ err }, "unexpected error in gRPC handler");
  return { code: grpc.status.INTERNAL, details: "internal error" };
}

/** A request its deserializer could not decode; `unary` answers it INVALID_ARGUMENT (grpc-js itself would answer INTERNAL). */
class UndecodableRequest {
  constructor(readonly error: InvalidArgumentError) {}
}

/**
 * Throws unless `bytes` is a well-formed sequence of protobuf fields at the top level. The
 * generated decoders stop quietly at a zero tag and read a length past the end as "the rest":
 * the bytes `0affff0300` would decode as an empty ApplyCatalogRequest.
 */
function wellFormed(bytes: Uint8Array): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    r.skip(wt, no);
  }
}

/** `def` with deserializers that never throw. */
function tolerant(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const methods = Object.entries(def).map(([name, m]) => {
    const requestDeserialize = (bytes: Buffer): object => {
      try {
        wellFormed(bytes);
        return m.requestDeserialize(bytes) as object;
      } catch (err) {
        return new UndecodableRequest(err instanceof InvalidArgumentError ? err : new InvalidArgumentError("request", `not a protobuf request of ${m.path}: ${bounded(errorMessage(err), 200)}`));
      }
    };
    return [name, { ...m, requestDeserialize }] as const;
  });
  return Object.fromEntries(methods);
}

/** Adapts a (possibly async) function to a grpc-js unary handler with the error mapping above. */
export function unary<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    if ((call.request as unknown) instanceof UndecodableRequest) {
      callback(toServiceError((call.request as unknown as UndecodableRequest).error, logger));
      return;
    }
    let result: Res | Promise<Res>;
    try {
      result = fn(call.request, call);
    } catch (err) {
      callback(toServiceError(err, logger));
      return;
    }
    // Synchronous results (Check) answer without a promise hop.
    if (result instanceof Promise) {
      result.then(
        (value) => callback(null, value),
        (err: unknown) => callback(toServiceError(err, logger)),
      );
      return;
    }
    callback(null, result);
  };
}

let reflectionDefinition: protoLoader.PackageDefinition | undefined;
function loadReflection(): protoLoader.PackageDefinition {
  reflectionDefinition ??= protoLoader.loadSync(
    readdirSync(join(PROTO_DIR, "proofgate/v1")).map((f) => `proofgate/v1/${f}`),
    { includeDirs: [PROTO_DIR] },
  );
  return reflectionDefinition;
}

/**
 * Streams one client connection may have open at once; a client's further calls wait in its own
 * queue (under their deadlines) until one ends. Node's HTTP/2 stops reading a connection while a
 * write of its own is pending, so when a client sends requests faster than they are answered,
 * both peers can end up writing into a full socket and neither reads again: the connection
 * stalls for good (seen over a unix socket, whose buffer is small). Bounding the client's
 * unanswered requests keeps what it can write below that buffer. 100 is HTTP/2's recommended
 * minimum (RFC 9113, section 6.5.2) and far above what one caller needs to fill the cores.
 */
export const MAX_CONCURRENT_STREAMS = 100;

/** Options of every proofgate gRPC server (the benchmark's echo floor uses them too). */
export const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
};

/** A grpc-js server with `grpc.health.v1.Health` and server reflection, bound to one or more addresses. */
export class GrpcServer {
  private constructor(
    private readonly server: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly serviceNames: readonly string[],
    /** Bound addresses with ephemeral ports resolved, e.g. `127.0.0.1:41234` or `unix:/run/pg.sock`. */
    readonly addresses: readonly string[],
  ) {}

  /** Addresses: `host:port` (port 0 = ephemeral) or `unix:/path`. Health starts NOT_SERVING. */
  static async start(services: readonly ServiceBinding[], addresses: readonly string[], credentials = grpc.ServerCredentials.createInsecure()): Promise<GrpcServer> {
    const server = new grpc.Server(GRPC_SERVER_OPTIONS);
    for (const s of services) server.addService(tolerant(s.definition), s.implementation);
    const names = services.map((s) => s.name);
    const initial: Record<string, "NOT_SERVING"> = { "": "NOT_SERVING" };
    for (const n of names) initial[n] = "NOT_SERVING";
    const health = new HealthImplementation(initial);
    health.addToServer(server);
    // Advertise only what this server answers: a client must not discover a service that is UNIMPLEMENTED here.
    new ReflectionService(loadReflection(), { services: names }).addToServer(server);
    const bound: string[] = [];
    for (const address of addresses) {
      const port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(address, credentials, (err, p) => {
          if (err) {
            reject(new Error(`cannot listen on ${address}: ${err.message}`));
            return;
          }
          resolve(p);
        });
      });
      bound.push(address.startsWith("unix:") ? address : address.replace(/:\d+$/, `:${port}`));
    }
    return new GrpcServer(server, health, names, bound);
  }

  setServing(serving: boolean): void {
    const s = serving ? "SERVING" : "NOT_SERVING";
    this.health.setStatus("", s);
    for (const n of this.serviceNames) this.health.setStatus(n, s);
  }

  /** Stops accepting calls, lets in-flight ones finish for up to `graceMs`, then cuts the rest. */
  async close(graceMs = 5_000): Promise<void> {
    this.setServing(false);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
