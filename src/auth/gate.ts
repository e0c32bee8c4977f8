import { PermissionDeniedError, UnauthenticatedError } from "../errors/index.js";
import { ROLES, type Authenticator, type CertificateAuthenticator, type Principal, type Role } from "./principals.js";

/** What a call presents: the `authorization` header/metadata and a verified client certificate's identities. */
export interface Credentials {
  readonly authorization?: string | undefined;
  readonly certificateIdentities?: readonly string[] | undefined;
}

export type DenialReason = "unauthenticated" | "permission_denied";

export interface Denial {
  readonly method: string;
  readonly reason: DenialReason;
  /** The principal, when one was authenticated (permission_denied). */
  readonly principal?: string;
  readonly message: string;
}

/**
 * The principal of a writer that runs without an auth file. Only possible on loopback (the
 * writer refuses any other listen address without authentication), so it stands for "a process
 * on this machine".
 */
export const LOCAL_PRINCIPAL: Principal = { name: "local", roles: new Set(ROLES) };

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * Authentication then authorization for one call: a verified client certificate that maps to a
 * principal wins, else the bearer token. Missing or unknown credentials → UnauthenticatedError;
 * a principal without the role → PermissionDeniedError. Every denial is reported to `denied`.
 */
export class Gate {
  constructor(
    private readonly auth: (Authenticator & Partial<CertificateAuthenticator>) | undefined,
    private readonly denied: (d: Denial) => void = () => undefined,
    private readonly allowed: (method: string, principal: Principal) => void = () => undefined,
  ) {}

  get enabled(): boolean {
    return this.auth !== undefined;
  }

  authenticate(creds: Credentials): Principal | undefined {
    const auth = this.auth;
    if (!auth) return LOCAL_PRINCIPAL;
    const ids = creds.certificateIdentities;
    const byCert = ids && ids.length > 0 ? auth.authenticateCertificate?.(ids) : undefined;
    if (byCert) return byCert;
    const token = creds.authorization ? BEARER.exec(creds.authorization)?.[1] : undefined;
    return token ? auth.authenticateToken(token) : undefined;
  }

  authorize(method: string, role: Role, creds: Credentials): Principal {
    const principal = this.authenticate(creds);
    if (!principal) {
      const message = creds.authorization || creds.certificateIdentities?.length ? "unknown credentials" : "missing credentials: send authorization: Bearer <token>";
      this.denied({ method, reason: "unauthenticated", message });
      throw new UnauthenticatedError(message);
    }
    if (!principal.roles.has(role)) {
      const message = `principal "${principal.name}" lacks the "${role}" role needed for ${method}`;
      this.denied({ method, reason: "permission_denied", principal: principal.name, message });
      throw new PermissionDeniedError(message);
    }
    this.allowed(method, principal);
    return principal;
  }
}

/**
 * The audit fields of an action: the actor is always the authenticated principal; what the
 * caller wrote in its own `actor` field is kept as "on behalf of" text when it says something else.
 */
export function actorOf(principal: Principal, callerActor: string | undefined): { actor: string; onBehalfOf: string } {
  const claimed = (callerActor ?? "").trim().slice(0, 1_000);
  return { actor: principal.name, onBehalfOf: claimed && claimed !== principal.name ? claimed : "" };
}
