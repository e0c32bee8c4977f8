import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ProofgateClient, type CheckResult } from "../../src/client/index.js";
import { IngestResult } from "../../src/gen/proofgate/v1/ingest.js";
import { DEMO_CUSTOMER, demoStory } from "../../src/dev/story.js";
import type { WriterClient } from "../harness/writer.js";
import { STORY_ANSWERS, STORY_PERIOD_MS, startDemoSystem, type DemoSystem } from "../harness/demo.js";
import { waitFor } from "../harness/wait.js";
import type { SidecarUnderTest } from "../harness/system.js";

/**
 * Local mode end to end: nats-server, `proofgate writer` and `proofgate sidecar` as real
 * processes, and a `ProofgateClient` in this process reading the sidecar's replica file. The demo
 * story is told through the writer; every answer comes from the file, in process, and agrees
 * with what the sidecar says over gRPC. Then the sidecar goes away: the file still answers, the
 * client falls back to the sidecar (and its fail policy) where the file cannot.
 */
const PERIOD_MS = STORY_PERIOD_MS;
const STORY = STORY_ANSWERS;

describe("a client in local mode through the demo story, against the real binaries", () => {
  let system: DemoSystem;
  let client: WriterClient;
  let sidecar: SidecarUnderTest;
  let local: ProofgateClient;
  let remote: ProofgateClient;
  let catalogRevision = 0;

  beforeAll(async () => {
    system = await startDemoSystem("e2e-local");
    ({ client, sidecar, catalogRevision } = system);
    local = new ProofgateClient({ address: sidecar.client.address, replica: sidecar.replicaPath, failPolicy: { default: "closed" } });
    remote = new ProofgateClient({ address: sidecar.client.address, replica: false, failPolicy: { default: "closed" } });
  });

  afterAll(async () => {
    local.close();
    remote.close();
    await system.close();
  });

  /** The file's answer once the replica holds `revision` (a check with min_revision would ask the sidecar until then). */
  const fromFile = (feature: string, revision: number, quantity?: number): Promise<CheckResult> =>
    waitFor(async () => {
      const r = await local.check({ customerId: DEMO_CUSTOMER, feature, quantity });
      return r.source === "local" && r.revision >= revision ? r : undefined;
    }, `local answer at revision ${revision}`);

  test("every decision of the story comes from the replica file, fresh, as the sidecar gives it", async () => {
    expect(local.mode).toBe("local");
    expect((await fromFile("api-access", catalogRevision)).status).toBe("UNKNOWN_CUSTOMER");
    let revision = catalogRevision;
    for (const [i, beat] of demoStory(PERIOD_MS).entries()) {
      const want = STORY[i];
      if (!want) throw new Error(`no expectation for beat ${i + 1}`);
      const what = `beat ${i + 1} (${beat.title})`;
      if (beat.waitMs) {
        // No event: the file's answer changes on time, at the same revision.
        const r = await waitFor(async () => {
          const r = await fromFile("api-access", revision);
          return r.status === want.status ? r : undefined;
        }, `${what}: ${want.status}`, PERIOD_MS + 15_000);
        expect(r.revision).toBe(revision);
      }
      const events = beat.events(Date.now());
      if (events.length > 0) {
        const res = await client.publish(events);
        expect(res.results.map((r) => r.result), what).toEqual(events.map(() => IngestResult.INGEST_RESULT_ACCEPTED));
        revision = res.revision;
      }
      for (const feature of ["api-access", "seats"]) {
        const l = await fromFile(feature, revision);
        expect({ status: l.status, allowed: l.allowed, stale: l.stale }, `${what}, ${feature}: ${l.reason}`).toEqual({ status: want.status, allowed: want.allowed, stale: false });
        expect(l.reason, what).toMatch(want.reason);
        if (want.allowed && feature === "seats") expect(l.limit, what).toBe(3);
        const r = await remote.check({ customerId: DEMO_CUSTOMER, feature, minRevision: revision });
        expect({ status: r.status, allowed: r.allowed, revision: r.revision, source: r.source }, what).toEqual({ status: l.status, allowed: l.allowed, revision: l.revision, source: "sidecar" });
      }
      if (i === 2) {
        expect((await fromFile("seats", revision, 3)).allowed).toBe(true);
        expect((await fromFile("seats", revision, 4)).status).toBe("LIMIT_EXCEEDED");
      }
    }

    // A revision the replica has not applied: the client asks the sidecar, which waits and then says stale.
    const ahead = await local.check({ customerId: DEMO_CUSTOMER, feature: "api-access", minRevision: revision + 1_000 }, { deadlineMs: 5_000 });
    expect({ source: ahead.source, stale: ahead.stale, status: ahead.status }).toEqual({ source: "sidecar", stale: true, status: "REVOKED" });
  });

  test("without the sidecar, the file still answers; what it cannot answer goes to the fail policy; no file, gRPC", async () => {
    const before = await fromFile("api-access", 0);
    expect(await sidecar.stop("SIGTERM")).toBe(0);
    // Still fresh: the sidecar confirmed it current moments ago (stale after the 10 s coherency window).
    const after = await local.check({ customerId: DEMO_CUSTOMER, feature: "api-access" });
    expect({ ...after, reason: "" }).toEqual({ ...before, reason: "" });
    const ahead = await local.check({ customerId: DEMO_CUSTOMER, feature: "api-access", minRevision: before.revision + 1 });
    expect({ source: ahead.source, allowed: ahead.allowed, status: ahead.status }).toEqual({ source: "fail-policy", allowed: false, status: "SIDECAR_UNAVAILABLE" });

    // The file gone (a new pod's empty volume): local mode turns itself off within a second.
    for (const suffix of ["", "-wal", "-shm"]) rmSync(sidecar.replicaPath + suffix, { force: true });
    await waitFor(async () => (await local.check({ customerId: DEMO_CUSTOMER, feature: "api-access" })).source === "fail-policy", "local mode off");
    expect(local.mode).toBe("grpc");
    expect(local.localProblem).toMatch(/replica/);
  });
});
