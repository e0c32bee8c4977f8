import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { isIP, type AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../observability/logger.js";
import type { TlsFiles } from "./tls.js";

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>;

export interface OpsServerOptions {
  readonly registry: Registry;
  /** Liveness: the process is not wedged. */
  readonly healthy: () => boolean;
  /** Readiness: the service can do its job now (e.g. the replica has caught up). */
  readonly ready: () => boolean;
  /** Said after "ready"/"not ready" in the /readyz body (e.g. the writer's role). */
  readonly readyDetail?: () => string;
  /** Extra routes by `METHOD path`, e.g. `POST /webhooks/stripe`. Bodies arrive raw (signatures need the exact bytes). */
  readonly routes?: Readonly<Record<string, RouteHandler>>;
  readonly maxBodyBytes?: number;
  /**
   * Serve HTTPS. A client CA asks for client certificates without requiring them (probes and
   * scrapers have none); routes see whether one was verified (`socket.authorized`).
   */
  readonly tls?: TlsFiles | undefined;
}

/** The HTTP side of a service: `/healthz`, `/readyz`, `/metrics` and any extra routes. */
export class OpsServer {
  private constructor(
    private readonly server: Server,
    readonly address: string,
  ) {}

  static async start(listen: string, options: OpsServerOptions, logger: Logger): Promise<OpsServer> {
    const maxBody = options.maxBodyBytes ?? 1024 * 1024;
    const listener: RequestListener = (req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBody) {
          res.writeHead(413).end("request body too large\n");
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => {
        void route(req, res, Buffer.concat(chunks)).catch((err: unknown) => {
          logger.error({ err, path: req.url }, "HTTP handler failed");
          if (!res.headersSent) res.writeHead(500).end("internal error\n");
        });
      });
    };
    const tls = options.tls;
    const server: Server = tls
      ? createTlsServer({ cert: tls.cert, key: tls.key, ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}) }, listener)
      : createServer(listener);
    const route = async (req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      if (req.method === "GET" && path === "/healthz") {
        const ok = options.healthy();
        res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "unhealthy\n");
        return;
      }
      if (req.method === "GET" && path === "/readyz") {
        const ok = options.ready();
        const detail = options.readyDetail?.();
        res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(`${ok ? "ready" : "not ready"}${detail ? `: ${detail}` : ""}\n`);
        return;
      }
      if (req.method === "GET" && path === "/metrics") {
        const text = await options.registry.metrics();
        res.writeHead(200, { "content-type": options.registry.contentType }).end(text);
        return;
      }
      const handler = options.routes?.[`${req.method ?? "GET"} ${path}`];
      if (handler) {
        await handler(req, res, body);
        return;
      }
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    };
    const { host, port } = splitHostPort(listen);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    return new OpsServer(server, `${addr.address}:${addr.port}`);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  const host = i > 0 ? listen.slice(0, i).replace(/^\[|\]$/g, "") : "127.0.0.1";
  const port = Number(i >= 0 ? listen.slice(i + 1) : listen);
  return { host, port };
}

/** A listen address only this machine can reach: a unix socket, localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackListen(listen: string): boolean {
  if (listen.startsWith("unix:")) return true;
  const { host } = splitHostPort(listen);
  if (host === "localhost" || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}
