/**
 * Who may call the writer: principals from the auth file (bearer-token digests, client
 * certificate identities) and their roles. See docs/security.md.
 */
export { ROLES, PrincipalTable, tokenDigest, type Authenticator, type CertificateAuthenticator, type Principal, type Role } from "./principals.js";
export { AuthFile } from "./file.js";
export { Gate, LOCAL_PRINCIPAL, actorOf, type Credentials, type Denial, type DenialReason } from "./gate.js";
export { certificateIdentities, guardedRoute, guardedUnary } from "./transport.js";
