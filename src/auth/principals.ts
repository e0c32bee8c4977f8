import { createHash } from "node:crypto";
import { parse } from "yaml";

export type Role = "ingest" | "admin" | "read";
export const ROLES: readonly Role[] = ["ingest", "admin", "read"];

export interface Principal {
  readonly name: string;
  readonly roles: ReadonlySet<Role>;
}

export interface Authenticator {
  /** The principal for a bearer token, or undefined when the token is unknown. */
  authenticateToken(token: string): Principal | undefined;
}

/** Maps a verified client certificate's identities (subject CN, SAN values) to a principal. */
export interface CertificateAuthenticator {
  authenticateCertificate(identities: readonly string[]): Principal | undefined;
}

/** The hex SHA-256 of a token: what the auth file stores instead of the token. */
export function tokenDigest(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Bounds on what enters through the auth file. */
export const MAX_AUTH_FILE_BYTES = 1024 * 1024;
const MAX_NAME = 128;
const HEX64 = /^[0-9a-f]{64}$/;

/** A parsed auth file: lookups by token digest and by certificate identity. */
export class PrincipalTable implements Authenticator, CertificateAuthenticator {
  private constructor(
    private readonly byDigest: ReadonlyMap<string, Principal>,
    private readonly byCertificate: ReadonlyMap<string, Principal>,
    readonly principals: readonly Principal[],
  ) {}

  authenticateToken(token: string): Principal | undefined {
    if (!token || token.length > 4096) return undefined;
    return this.byDigest.get(tokenDigest(token));
  }

  authenticateCertificate(identities: readonly string[]): Principal | undefined {
    for (const id of identities) {
      const p = this.byCertificate.get(id);
      if (p) return p;
    }
    return undefined;
  }

  /**
   * Parses the YAML auth file; every problem is reported with the entry it is in:
   *
   *     principals:
   *       - name: billing-bridge
   *         roles: [ingest]
   *         token_sha256: <hex sha-256 of the token>   # or a list, while rotating
   *       - name: console
   *         roles: [read]
   *         certificate: console.proofgate.svc          # mTLS: client certificate CN or SAN
   */
  static parse(text: string): PrincipalTable {
    if (Buffer.byteLength(text, "utf8") > MAX_AUTH_FILE_BYTES) throw new Error(`auth file: larger than ${MAX_AUTH_FILE_BYTES} bytes`);
    const doc: unknown = parse(text);
    const list = (doc as { principals?: unknown } | null)?.principals;
    if (!Array.isArray(list)) throw new Error("auth file: expected a top-level `principals:` list");
    const byDigest = new Map<string, Principal>();
    const byCertificate = new Map<string, Principal>();
    const names = new Set<string>();
    const principals: Principal[] = [];
    list.forEach((raw: unknown, i) => {
      const where = `auth file: principals[${i}]`;
      if (raw === null || typeof raw !== "object") throw new Error(`${where}: must be a mapping`);
      const e = raw as Record<string, unknown>;
      const unknownKeys = Object.keys(e).filter((k) => !["name", "roles", "token_sha256", "certificate"].includes(k));
      if (unknownKeys.length) throw new Error(`${where}: unknown key ${unknownKeys.join(", ")} (name, roles, token_sha256, certificate)`);
      const name = e["name"];
      if (typeof name !== "string" || !name.trim() || name.length > MAX_NAME) throw new Error(`${where}.name: required, at most ${MAX_NAME} characters`);
      if (names.has(name)) throw new Error(`${where}.name: "${name}" appears twice`);
      names.add(name);
      const roles = e["roles"];
      if (!Array.isArray(roles) || roles.length === 0) throw new Error(`${where}.roles: a non-empty list of ${ROLES.join(", ")}`);
      for (const r of roles) if (!ROLES.includes(r as Role)) throw new Error(`${where}.roles: unknown role "${String(r)}" (${ROLES.join(", ")})`);
      const principal: Principal = { name, roles: new Set(roles as Role[]) };
      const digests = e["token_sha256"] === undefined ? [] : Array.isArray(e["token_sha256"]) ? e["token_sha256"] : [e["token_sha256"]];
      for (const d of digests) {
        if (typeof d !== "string" || !HEX64.test(d.toLowerCase())) throw new Error(`${where}.token_sha256: must be the 64-digit hex SHA-256 of the token, not the token`);
        if (byDigest.has(d.toLowerCase())) throw new Error(`${where}.token_sha256: the same token is listed for "${byDigest.get(d.toLowerCase())?.name}"`);
        byDigest.set(d.toLowerCase(), principal);
      }
      const cert = e["certificate"];
      if (cert !== undefined) {
        if (typeof cert !== "string" || !cert || cert.length > 256) throw new Error(`${where}.certificate: the client certificate's CN or a SAN value`);
        if (byCertificate.has(cert)) throw new Error(`${where}.certificate: "${cert}" already maps to "${byCertificate.get(cert)?.name}"`);
        byCertificate.set(cert, principal);
      }
      if (digests.length === 0 && cert === undefined) throw new Error(`${where}: needs token_sha256 or certificate`);
      principals.push(principal);
    });
    return new PrincipalTable(byDigest, byCertificate, principals);
  }
}
