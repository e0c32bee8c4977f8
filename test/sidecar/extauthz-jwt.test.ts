import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SignJWT, UnsecuredJWT, exportJWK, generateKeyPair, type CryptoKey, type JWTPayload } from "jose";
import { stringify } from "yaml";
import { NatsServer } from "../harness/nats.js";
import { tempDir } from "../harness/tmp.js";
import { StatePublisher, paidCustomer, startTestSidecar, testCatalog, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { EnvoyAuthzClient, answerHeaders, httpStatusOf, type EnvoyCheckResponse } from "../harness/envoy.js";

const ISSUER = "https://id.example.com";

interface Signer {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: Record<string, unknown>;
}

async function signer(kid: string): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

async function token(s: Signer, claims: JWTPayload, opts: { exp?: number; nbf?: number; iss?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: s.kid })
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience("api")
    .setIssuedAt(now - 60)
    .setNotBefore(opts.nbf ?? now - 60)
    .setExpirationTime(opts.exp ?? now + 600)
    .sign(s.privateKey);
}

function reason(res: EnvoyCheckResponse): string {
  return String((JSON.parse(res.denied_response?.body ?? "{}") as Record<string, unknown>)["reason"]);
}

/** The customer from a JWT verified against a JWKS file, on the Check listener itself; and stale_policy: deny. */
describe("ext_authz with JWT identity", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let pub: StatePublisher;
  let sc: TestSidecar;
  let envoy: EnvoyAuthzClient;
  let key: Signer;
  const jwksPath = (): string => join(dir.path, "jwks.json");

  beforeAll(async () => {
    nats = await NatsServer.start();
    dir = tempDir();
    key = await signer("k1");
    writeFileSync(jwksPath(), JSON.stringify({ keys: [key.jwk] }));
    const rules = {
      default: "deny",
      identity: { jwt: { jwks_file: "jwks.json", issuer: ISSUER, audience: "api", algorithms: ["ES256"] } },
      rules: [{ name: "api", path: { prefix: "/v1" }, feature: "api-access" }],
    };
    writeFileSync(join(dir.path, "rules.yaml"), stringify(rules));
    pub = await StatePublisher.connect(nats.url);
    await pub.catalog(testCatalog({ coherencyWindowMs: 1_000, stalePolicy: "deny" }));
    const rev = await pub.document(paidCustomer("cus_jwt", "premium", Date.now()));
    sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, extAuthzRules: join(dir.path, "rules.yaml") });
    await sc.sidecar.whenReady();
    // Fresh once a heartbeat confirms the replica (stale answers would be 503 under stale_policy deny).
    await waitFor(() => !sc.sidecar.stale, "the sidecar fresh");
    await waitFor(() => sc.sidecar.revision >= rev, { what: "document applied" });
    envoy = new EnvoyAuthzClient(sc.sidecar.extAuthzAddresses[0] ?? "");
  });

  afterAll(async () => {
    envoy.close();
    await sc.close();
    await pub.close();
    await nats.dispose();
    dir.dispose();
  });

  const ask = (authorization: string | undefined): Promise<EnvoyCheckResponse> =>
    envoy.check({ path: "/v1/logs", headers: authorization === undefined ? {} : { authorization } });

  it("is served on the Check listener when no address of its own is set", () => {
    expect(sc.sidecar.extAuthzAddresses).toEqual(sc.sidecar.grpcAddresses);
  });

  it("allows a verified token's customer and passes the id upstream", async () => {
    const res = await ask(`Bearer ${await token(key, { sub: "cus_jwt" })}`);
    expect(httpStatusOf(res)).toBe(200);
    expect(answerHeaders(res)).toMatchObject({ "x-proofgate-status": "GRANTED", "x-proofgate-customer-id": "cus_jwt" });
  });

  it("answers 401 with the reason: bad signature, expired, no customer claim, and the other ways a token fails", async () => {
    const now = Math.floor(Date.now() / 1000);
    const impostor = await signer("k1"); // same kid, another key
    const cases: [string | undefined, RegExp][] = [
      [`Bearer ${await token(impostor, { sub: "cus_jwt" })}`, /^the token's signature does not verify against the JWKS$/],
      [`Bearer ${await token(key, { sub: "cus_jwt" }, { exp: now - 120, nbf: now - 600 })}`, /^the token expired at \d{4}-\d\d-\d\dT/],
      [`Bearer ${await token(key, { email: "a@example.com" })}`, /^the token has no "sub" claim$/],
      [`Bearer ${await token(key, { sub: 42 } as unknown as JWTPayload)}`, /^the token's "sub" claim is not a string$/],
      [`Bearer ${await token(key, { sub: "cus_jwt" }, { nbf: now + 3600 })}`, /^the token is not valid before /],
      [`Bearer ${await token(key, { sub: "cus_jwt" }, { iss: "https://evil.example.com" })}`, /issuer/],
      [`Bearer ${new UnsecuredJWT({ sub: "cus_jwt" }).setIssuer(ISSUER).setAudience("api").encode()}`, /algorithm is not allowed|not a well-formed/],
      ["Bearer not.a.jwt", /^the token is not a well-formed signed JWT$/],
      ["Bearer ", /^no bearer token in the authorization header$/],
      [undefined, /^no bearer token \(no authorization header\)$/],
    ];
    for (const [auth, why] of cases) {
      const res = await ask(auth);
      expect(httpStatusOf(res), String(why)).toBe(401);
      expect(reason(res)).toMatch(why);
      const h = answerHeaders(res);
      expect(h["x-proofgate-status"]).toBe("UNAUTHENTICATED");
      expect(h["www-authenticate"]).toMatch(/^Bearer error="invalid_token", error_description="/);
    }
  });

  it("follows a rotated JWKS file without a restart", async () => {
    const next = await signer("k2");
    const t = await token(next, { sub: "cus_jwt" });
    expect(httpStatusOf(await ask(`Bearer ${t}`))).toBe(401);
    writeFileSync(jwksPath(), JSON.stringify({ keys: [key.jwk, next.jwk] }));
    await waitFor(async () => httpStatusOf(await ask(`Bearer ${t}`)) === 200, { what: "the new key accepted" });
  });

  it("applies stale_policy: deny like Check does: 503, stale, and what it would have answered", async () => {
    await nats.stop();
    await waitFor(() => sc.sidecar.stale, { what: "the replica stale" });
    const res = await ask(`Bearer ${await token(key, { sub: "cus_jwt" })}`);
    expect(httpStatusOf(res)).toBe(503);
    expect(answerHeaders(res)).toMatchObject({ "x-proofgate-status": "GRANTED", "x-proofgate-stale": "true" });
    expect(reason(res)).toMatch(/^Denied because the replica is stale .*it would have answered GRANTED/);
  });
});
