import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";

/** Who the console is talking to: what the writer's authenticator returns (src/auth's Principal). */
export interface ConsolePrincipal {
  readonly name: string;
  readonly roles: ReadonlySet<string>;
}

export type TokenAuthenticator = (token: string) => ConsolePrincipal | undefined;

export const COOKIE = "proofgate_console";
const SESSION_TTL_MS = 12 * 3_600_000;
const MAX_SESSIONS = 10_000;
export const MAX_TOKEN_CHARS = 4_096;

/**
 * Signed-in browsers. The cookie holds a random session id, never the token; the token stays in
 * this process and is authenticated again on every request, so revoking it (or its read role)
 * takes effect at once. Bounded: the oldest session goes when the map is full. A restart signs
 * everyone out.
 */
export class Sessions {
  private readonly sessions = new Map<string, { token: string; expiresAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  create(token: string): string {
    while (this.sessions.size >= MAX_SESSIONS) {
      const oldest = this.sessions.keys().next().value;
      if (oldest === undefined) break;
      this.sessions.delete(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    this.sessions.set(id, { token, expiresAt: this.now() + SESSION_TTL_MS });
    return id;
  }

  token(id: string | undefined): string | undefined {
    if (!id) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return s.token;
  }

  delete(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  cookie(id: string, secure: boolean): string {
    return `${COOKIE}=${id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}${secure ? "; Secure" : ""}`;
  }

  static clearCookie(): string {
    return `${COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0`;
  }
}

export function cookieValue(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** `Authorization: Bearer <token>` (scripts exporting the audit trail), if present. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m?.[1];
}

/** True for addresses only this machine can reach; a console without authentication is served only there. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host) || host === "::ffff:127.0.0.1";
}
