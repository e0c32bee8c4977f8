import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyOptions } from "jose";
import { InvalidArgumentError } from "../../errors/index.js";
import { idProblem } from "../../billing/ids.js";
import type { IdentityConfig } from "./rules.js";

/** Longest bearer token looked at; Envoy bounds headers too, this bounds the work. */
export const MAX_TOKEN_BYTES = 16 * 1024;

/** The customer id, or why none could be established (the reason goes back to the caller). */
export type IdentityResult = { readonly customerId: string; readonly reason?: undefined } | { readonly customerId?: undefined; readonly reason: string };

export interface Identity {
  /** `WWW-Authenticate` scheme for 401 answers, when the identity is a bearer token. */
  readonly scheme: "Bearer" | undefined;
  resolve(header: (name: string) => string | undefined): IdentityResult | Promise<IdentityResult>;
}

function customer(id: string, what: string): IdentityResult {
  const problem = idProblem(id, "empty");
  return problem === undefined ? { customerId: id } : { reason: `${what}: ${problem}` };
}

/**
 * The customer id from a request header (trusted as sent: only for headers the proxy sets
 * itself, e.g. after its own JWT or mTLS filter), or from a claim of a JWT verified against the
 * JWKS: signature, `exp`, `nbf`, and the issuer and audience when configured. Tokens are never
 * decoded without verification, and never logged.
 */
export function createIdentity(config: IdentityConfig, jwksText: string | undefined): Identity {
  if (config.kind === "header") {
    const name = config.header;
    return {
      scheme: undefined,
      resolve: (header) => {
        const v = header(name);
        return v === undefined ? { reason: `no ${name} header` } : customer(v.trim(), `the ${name} header`);
      },
    };
  }
  let jwks: Partial<JSONWebKeySet> | null;
  try {
    jwks = JSON.parse(jwksText ?? "") as Partial<JSONWebKeySet> | null;
  } catch (err) {
    throw new InvalidArgumentError("identity.jwt.jwks_file", `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof jwks !== "object" || jwks === null || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
    throw new InvalidArgumentError("identity.jwt.jwks_file", 'must be a JSON Web Key Set: {"keys": [...]} with at least one key');
  }
  let keys: ReturnType<typeof createLocalJWKSet>;
  try {
    keys = createLocalJWKSet(jwks as JSONWebKeySet);
  } catch (err) {
    throw new InvalidArgumentError("identity.jwt.jwks_file", (err as Error).message);
  }
  const options: JWTVerifyOptions = {
    ...(config.issuer === undefined ? {} : { issuer: config.issuer }),
    ...(config.audience === undefined ? {} : { audience: [...config.audience] }),
    ...(config.algorithms === undefined ? {} : { algorithms: [...config.algorithms] }),
    clockTolerance: config.clockToleranceSeconds,
  };
  const { header: name, claim } = config;
  return {
    scheme: "Bearer",
    resolve: async (header) => {
      const raw = header(name);
      if (raw === undefined) return { reason: `no bearer token (no ${name} header)` };
      // "Bearer <token>" or the bare token.
      const token = raw.trim().replace(/^bearer(\s+|$)/i, "");
      if (token === "") return { reason: `no bearer token in the ${name} header` };
      if (token.length > MAX_TOKEN_BYTES) return { reason: `the token is longer than ${MAX_TOKEN_BYTES} bytes` };
      let payload: Record<string, unknown>;
      try {
        payload = (await jwtVerify(token, keys, options)).payload;
      } catch (err) {
        return { reason: tokenProblem(err) };
      }
      const v = payload[claim];
      if (v === undefined) return { reason: `the token has no "${claim}" claim` };
      if (typeof v !== "string") return { reason: `the token's "${claim}" claim is not a string` };
      return customer(v, `the token's "${claim}" claim`);
    },
  };
}

/** A sentence for the caller; jose's codes are stable, its messages are not part of our contract. */
function tokenProblem(err: unknown): string {
  if (err instanceof errors.JWTExpired) {
    const exp = err.payload.exp;
    return `the token expired${typeof exp === "number" ? ` at ${new Date(exp * 1000).toISOString()}` : ""}`;
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "nbf") {
      const nbf = err.payload.nbf;
      return `the token is not valid before ${typeof nbf === "number" ? new Date(nbf * 1000).toISOString() : "its nbf claim"}`;
    }
    if (err.claim === "iss") return "the token's issuer (iss) is not the one configured";
    if (err.claim === "aud") return "the token's audience (aud) is not one of those configured";
    return `the token's "${err.claim}" claim is invalid (${err.reason})`;
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return "the token's signature does not verify against the JWKS";
  if (err instanceof errors.JWKSNoMatchingKey) return "no key of the JWKS matches the token (kid and alg)";
  if (err instanceof errors.JWKSMultipleMatchingKeys) return "several keys of the JWKS match the token; give the keys a kid";
  if (err instanceof errors.JOSEAlgNotAllowed) return "the token's algorithm is not allowed";
  if (err instanceof errors.JOSENotSupported) return "the token's algorithm or key type is not supported";
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return "the token is not a well-formed signed JWT";
  return "the token could not be verified";
}
