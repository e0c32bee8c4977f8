import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeadlineExceededError, InvalidArgumentError, ProofgateClient, ProofgateError, UnavailableError } from "../../src/client/index.js";
import { AccessStatus, CheckServiceService, type CheckRequest, type CheckResponse } from "../../src/gen/proofgate/v1/check.js";

/**
 * The client's gRPC behaviour against a real grpc-js server scripted to fail: retries (only on
 * UNAVAILABLE, within the deadline), deadlines, the per-feature fail policy, typed errors.
 */
describe("ProofgateClient over gRPC, when the sidecar misbehaves", () => {
  let server: grpc.Server;
  let address: string;
  /** What the server does with each call of a customer: a status code to fail with, "hang", or answer. */
  const script = new Map<string, (grpc.status | "hang" | "ok")[]>();
  const calls = new Map<string, number>();

  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(CheckServiceService, {
      check: (call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
        const id = call.request.customerId;
        const n = calls.get(id) ?? 0;
        calls.set(id, n + 1);
        const step = script.get(id)?.[n] ?? "ok";
        if (step === "hang") return;
        if (step !== "ok") {
          cb({ code: step, details: step === grpc.status.INVALID_ARGUMENT ? "feature: required" : "scripted failure" });
          return;
        }
        cb(null, { allowed: true, status: AccessStatus.ACCESS_STATUS_GRANTED, reason: "ok", value: "true", limit: undefined, validUntil: new Date(1_800_000_000_000), revision: 7, stale: false });
      },
      checkBatch: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNAVAILABLE, details: "down" }),
      listEntitlements: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNAVAILABLE, details: "down" }),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });

  afterAll(() => {
    server.forceShutdown();
  });

  const client = (o: ConstructorParameters<typeof ProofgateClient>[0] = {}): ProofgateClient =>
    new ProofgateClient({ address, replica: false, retry: { attempts: 3, initialBackoffMs: 5 }, ...o });

  it("retries UNAVAILABLE with backoff and answers from the sidecar", async () => {
    script.set("cus_retry", [grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE, "ok"]);
    const c = client();
    const r = await c.check({ customerId: "cus_retry", feature: "api-access" });
    expect(calls.get("cus_retry")).toBe(3);
    expect(r).toEqual({ allowed: true, status: "GRANTED", reason: "ok", value: "true", limit: undefined, validUntil: new Date(1_800_000_000_000), revision: 7, stale: false, source: "sidecar" });
    c.close();
  });

  it("gives up after the attempts and answers with the feature's fail policy, saying so", async () => {
    const down = [grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE];
    script.set("cus_down", down);
    script.set("cus_down2", down);
    const c = client({ failPolicy: { default: "closed", features: { "api-access": "open" } } });
    const open = await c.check({ customerId: "cus_down", feature: "api-access" });
    expect(calls.get("cus_down")).toBe(3);
    expect(open).toMatchObject({ allowed: true, status: "SIDECAR_UNAVAILABLE", source: "fail-policy", stale: true, revision: 0 });
    expect(open.reason).toMatch(/^Allowed by the fail-open policy for "api-access": proofgate sidecar unavailable: scripted failure/);
    const closed = await c.check({ customerId: "cus_down2", feature: "seats" });
    expect(closed).toMatchObject({ allowed: false, status: "SIDECAR_UNAVAILABLE", source: "fail-policy" });
    const batch = await c.checkBatch([{ customerId: "a", feature: "api-access" }, { customerId: "a", feature: "seats" }]);
    expect(batch.results.map((r) => [r.allowed, r.source])).toEqual([[true, "fail-policy"], [false, "fail-policy"]]);
    expect(batch.source).toBe("fail-policy");
    // No features known without the sidecar: entitlements cannot be made up.
    await expect(c.listEntitlements("a")).rejects.toBeInstanceOf(UnavailableError);
    c.close();
  });

  it("keeps to the call's deadline; a late sidecar is unreachable too", async () => {
    script.set("cus_slow", ["hang"]);
    const thrower = client({ failPolicy: { default: "throw" } });
    await expect(thrower.check({ customerId: "cus_slow", feature: "api-access" }, { deadlineMs: 100 })).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(calls.get("cus_slow")).toBe(1);
    script.set("cus_slow2", ["hang"]);
    const closed = await client().check({ customerId: "cus_slow2", feature: "api-access" }, { deadlineMs: 100 });
    expect(closed).toMatchObject({ allowed: false, source: "fail-policy" });
    thrower.close();
  });

  it("does not retry or fail over errors that are not about reaching the sidecar", async () => {
    script.set("cus_bad", [grpc.status.INVALID_ARGUMENT]);
    const c = client({ failPolicy: { default: "open" } });
    const err = await c.check({ customerId: "cus_bad", feature: "x" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).field).toBe("feature");
    expect(calls.get("cus_bad")).toBe(1);
    script.set("cus_internal", [grpc.status.INTERNAL]);
    const internal = await c.check({ customerId: "cus_internal", feature: "x" }).catch((e: unknown) => e);
    expect(internal).toBeInstanceOf(ProofgateError);
    expect((internal as ProofgateError).code).toBe(grpc.status.INTERNAL);
    c.close();
  });

  it("rejects bad input before any call, naming the field, and bad options", async () => {
    const c = client();
    await expect(c.check({ customerId: "", feature: "api-access" })).rejects.toThrow(/^customer_id: required$/);
    await expect(c.check({ customerId: "c", feature: "seats", quantity: -1 })).rejects.toThrow(/^quantity: /);
    await expect(c.checkBatch(Array.from({ length: 1001 }, () => ({ customerId: "c", feature: "f" })))).rejects.toThrow(/^checks: at most 1000/);
    await expect(c.checkBatch([{ customerId: "c", feature: "" }])).rejects.toThrow(/^checks\[0\]\.feature: required/);
    expect(() => new ProofgateClient({ address, failPolicy: { default: "maybe" as "open" } })).toThrow(/failPolicy: must be open, closed or throw, got "maybe"/);
    expect(() => new ProofgateClient({ address, deadlineMs: 0 })).toThrow(/deadlineMs/);
    c.close();
  });
});
