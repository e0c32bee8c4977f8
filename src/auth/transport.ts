import type { IncomingMessage, ServerResponse } from "node:http";
import type * as grpc from "@grpc/grpc-js";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { PermissionDeniedError, UnauthenticatedError } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";
import { unary } from "../transport/grpc.js";
import type { RouteHandler } from "../transport/http.js";
import type { Credentials, Gate } from "./gate.js";
import type { Principal, Role } from "./principals.js";

/** The identities a client certificate asserts: subject CN and every SAN value (DNS, URI, email, IP). */
export function certificateIdentities(cert: PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return [];
  const out: string[] = [];
  // A certificate with an empty subject has none at run time, whatever the type says.
  const cn = (cert.subject as Partial<PeerCertificate["subject"]> | undefined)?.CN;
  if (typeof cn === "string" && cn) out.push(cn);
  for (const san of (cert.subjectaltname ?? "").split(",")) {
    const v = san.trim().replace(/^(DNS|URI|email|IP Address):/, "");
    if (v) out.push(v);
  }
  return out;
}

function grpcCredentials(call: grpc.ServerUnaryCall<unknown, unknown>): Credentials {
  const header = call.metadata.get("authorization")[0];
  const ctx = call.getAuthContext();
  return {
    authorization: typeof header === "string" ? header : undefined,
    certificateIdentities: certificateIdentities(ctx.sslPeerCertificate),
  };
}

/** A unary gRPC handler that runs only for a principal holding `role`; errors map as in `unary`. */
export function guardedUnary<Req, Res>(
  gate: Gate,
  method: string,
  role: Role,
  logger: Logger,
  fn: (request: Req, principal: Principal) => Res | Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return unary(logger, (request: Req, call) => fn(request, gate.authorize(method, role, grpcCredentials(call))));
}

/** An HTTP route that runs only for a principal holding `role`: 401 (with WWW-Authenticate) or 403 otherwise. */
export function guardedRoute(gate: Gate, role: Role, handler: (req: IncomingMessage, res: ServerResponse, body: Buffer, principal: Principal) => void | Promise<void>): RouteHandler {
  return (req, res, body) => {
    const socket = req.socket as Partial<TLSSocket>;
    const creds: Credentials = {
      authorization: req.headers.authorization,
      certificateIdentities: socket.authorized && socket.getPeerCertificate ? certificateIdentities(socket.getPeerCertificate()) : [],
    };
    let principal: Principal;
    try {
      principal = gate.authorize(`${req.method ?? "GET"} ${(req.url ?? "/").split("?")[0] ?? "/"}`, role, creds);
    } catch (err) {
      if (!(err instanceof UnauthenticatedError || err instanceof PermissionDeniedError)) throw err;
      const unauthenticated = err instanceof UnauthenticatedError;
      res.writeHead(unauthenticated ? 401 : 403, { "content-type": "text/plain", ...(unauthenticated ? { "www-authenticate": 'Bearer realm="proofgate"' } : {}) }).end(`${err.message}\n`);
      return;
    }
    return handler(req, res, body, principal);
  };
}
