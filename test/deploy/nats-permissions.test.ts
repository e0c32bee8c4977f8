import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BillingEvent, PaymentResult } from "../../src/gen/proofgate/v1/billing.js";
import { AccessStatus } from "../../src/gen/proofgate/v1/check.js";
import { STATE_STREAM } from "../../src/replication/subjects.js";
import { httpGet, startTestSidecar, type TestSidecar } from "../harness/sidecar.js";
import { EventFactory, startTestWriter, waitFor, type TestWriter } from "../harness/writer.js";
import { CHART, Helm, one, type Manifest } from "./helm.js";

/**
 * The NATS users the chart ships (natsAuth -> accounts.conf), loaded into a real nats-server,
 * with the real writer and sidecar running as those users. The permission lists are the same
 * ones nsc-users.sh puts into JWTs, so this is what "least privilege" means in practice: the
 * services work, and nothing else is allowed.
 */

const PASSWORDS = {
  PROOFGATE_WRITER_NATS_PASSWORD: "writer-secret",
  PROOFGATE_SIDECAR_NATS_PASSWORD: "sidecar-secret",
  PROOFGATE_BILLING_NATS_PASSWORD: "billing-secret",
};

class ConfiguredNats {
  private log = "";
  port = 0;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(accountsConf: string): Promise<ConfiguredNats> {
    const dir = mkdtempSync(join(tmpdir(), "proofgate-nats-auth-"));
    writeFileSync(join(dir, "accounts.conf"), accountsConf);
    writeFileSync(join(dir, "server.conf"), "include ./accounts.conf\n");
    const child = spawn("nats-server", ["-c", join(dir, "server.conf"), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", join(dir, "store")], {
      env: { ...process.env, ...PASSWORDS },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const server = new ConfiguredNats(child, dir);
    server.port = await new Promise<number>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        server.log += chunk.toString();
        const m = /Listening for client connections on [^\s]+:(\d+)/.exec(server.log);
        if (m?.[1] && server.log.includes("Server is ready")) resolve(Number(m[1]));
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.once("error", (err) => reject(new Error(`cannot start nats-server (apt-get install -y nats-server): ${err.message}`)));
      child.once("exit", (code) => reject(new Error(`nats-server exited with ${code}:\n${server.log}`)));
    });
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** "Publish Violation - User ..., Subject ..." style lines the server logged. */
  violations(): string[] {
    return this.log.split("\n").filter((l) => /Violation/.test(l));
  }

  async dispose(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("least-privilege NATS users from the chart's natsAuth values", () => {
  let helm: Helm;
  let nats: ConfiguredNats;
  let writer: TestWriter;
  let sidecar: TestSidecar;
  let billing: NatsConnection;
  let sidecarDir: string;
  const others: NatsConnection[] = [];

  beforeAll(async () => {
    helm = new Helm();
    const manifests = helm.template(CHART, { set: ["natsAuth.enabled=true", "natsAuth.sidecarAsNoAuthUser=true"] });
    const auth = one<Manifest & { data: Record<string, string> }>(manifests, "ConfigMap", "rel-proofgate-nats-auth");
    nats = await ConfiguredNats.start(auth.data["accounts.conf"] ?? "");
    writer = await startTestWriter({
      natsUrl: nats.url,
      // Replica snapshots too: the producer follows the state stream and writes the Object Store.
      options: { natsUser: "proofgate-writer", natsPassword: PASSWORDS.PROOFGATE_WRITER_NATS_PASSWORD, snapshotInterval: 300 },
    });
    await waitFor(() => writer.writer.ready(), "the writer to be ready (streams created as proofgate-writer)");
    await writer.client.applyCatalog();
    billing = await connect({ servers: nats.url, user: "proofgate-billing", pass: PASSWORDS.PROOFGATE_BILLING_NATS_PASSWORD });
    sidecarDir = mkdtempSync(join(tmpdir(), "proofgate-sidecar-auth-"));
    // No credentials: the server maps the sidecar to proofgate-sidecar (no_auth_user).
    sidecar = await startTestSidecar({ natsUrl: nats.url, dir: sidecarDir, decisionLogSample: 1, statusIntervalMs: 100 });
  });

  afterAll(async () => {
    await sidecar.close();
    await writer.dispose();
    for (const nc of [billing, ...others]) await nc.close();
    await nats.dispose();
    rmSync(sidecarDir, { recursive: true, force: true });
    helm.dispose();
  });

  it("lets billing publish, the writer consume and publish state, and the sidecar follow it, with no violation", async () => {
    const js = billing.jetstream();
    const f = new EventFactory("cus_least_privilege");
    for (const e of [f.subscribe("basic"), f.pay(PaymentResult.PAYMENT_RESULT_SUCCEEDED, "in_1", { planId: "basic" })]) {
      const ack = await js.publish("proofgate.billing.test", BillingEvent.encode(e).finish());
      expect(ack.stream).toBe("PROOFGATE_BILLING");
    }
    const res = await waitFor(async () => {
      const r = await sidecar.client.check({ customerId: "cus_least_privilege", feature: "advanced-filtering" });
      return r.status === AccessStatus.ACCESS_STATUS_GRANTED ? r : undefined;
    }, "the sidecar to grant the paid feature");
    expect(res.allowed).toBe(true);
    expect(res.revision).toBeGreaterThan(0);
    // What the kubelet's readiness probes ask.
    await waitFor(async () => (await httpGet(sidecar.sidecar.httpAddress ?? "", "/readyz")).status === 200, "the sidecar's /readyz");
    await waitFor(async () => (await httpGet(writer.writer.httpAddress, "/readyz")).status === 200, "the writer's /readyz");
    // The sidecar published its decision log (proofgate.decisions) as proofgate-sidecar.
    await waitFor(async () => /proofgate_sidecar_decision_log_total\{[^}]*outcome="published"[^}]*\} [1-9]/.test((await httpGet(sidecar.sidecar.httpAddress ?? "", "/metrics")).body), "a published decision");
    // Its status announcements reach the writer, whose console lists it and reads the dead-letter stream.
    await waitFor(async () => {
      const health = (await httpGet(writer.writer.httpAddress, "/console/health")).body;
      return /<table id="sidecars">.*<td class="num">[1-9]\d*<\/td>/s.test(health) && health.includes("PROOFGATE_DEADLETTER stream is empty") ? true : undefined;
    }, "the writer's console to list the sidecar and read the dead-letter stream");
    expect(nats.violations()).toEqual([]);
  });

  it("lets the writer put replica snapshots and a cold sidecar restore one, with no violation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "proofgate-sidecar-auth-"));
    try {
      // The customer of the test above is in the stream: wait for a snapshot that holds it.
      await waitFor(async () => /proofgate_writer_replica_snapshots_total\{[^}]*result="written"[^}]*\} [1-9]/.test((await httpGet(writer.writer.httpAddress, "/metrics")).body), "a snapshot written");
      const cold = await startTestSidecar({ natsUrl: nats.url, dir });
      try {
        await cold.sidecar.whenReady();
        const metrics = (await httpGet(cold.sidecar.httpAddress ?? "", "/metrics")).body;
        expect(metrics).toMatch(/proofgate_sidecar_snapshot_restores_total\{[^}]*result="restored"[^}]*\} 1/);
        const r = await cold.client.check({ customerId: "cus_least_privilege", feature: "advanced-filtering" });
        expect(r.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
      } finally {
        await cold.close();
      }
      expect(nats.violations()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lets a lazy sidecar fetch a customer (direct get) and follow the stream, with no violation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "proofgate-sidecar-auth-"));
    try {
      const lazy = await startTestSidecar({ natsUrl: nats.url, dir, mode: "lazy" });
      try {
        const r = await waitFor(async () => {
          const x = await lazy.client.check({ customerId: "cus_least_privilege", feature: "advanced-filtering" });
          return x.stale ? undefined : x;
        }, "a fresh answer from the lazy sidecar");
        expect(r.status).toBe(AccessStatus.ACCESS_STATUS_GRANTED);
        expect((await httpGet(lazy.sidecar.httpAddress ?? "", "/metrics")).body).toMatch(/proofgate_sidecar_lazy_misses_total\{[^}]*result="fetched"[^}]*\} 1/);
      } finally {
        await lazy.close();
      }
      expect(nats.violations()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses what each user does not need", async () => {
    const anonymous = await connect({ servers: nats.url });
    others.push(anonymous);
    const enc = new TextEncoder();
    // A sidecar (or anyone without credentials) cannot write state or billing events...
    anonymous.publish("proofgate.state.customer.forged", enc.encode("forged"));
    anonymous.publish("proofgate.billing.forged", enc.encode("forged"));
    // ...nor manage streams.
    const ajsm = await anonymous.jetstreamManager({ checkAPI: false });
    await expect(ajsm.streams.purge(STATE_STREAM)).rejects.toThrow(/Permissions Violation/);
    await expect(ajsm.streams.add({ name: "ROGUE", subjects: ["rogue.>"] })).rejects.toThrow(/Permissions Violation/);
    // Billing can neither read state nor look at the streams.
    billing.subscribe("proofgate.state.>");
    const bjsm = await billing.jetstreamManager({ checkAPI: false });
    await expect(bjsm.streams.info(STATE_STREAM)).rejects.toThrow(/Permissions Violation/);
    // The writer cannot delete streams.
    const wnc = await connect({ servers: nats.url, user: "proofgate-writer", pass: PASSWORDS.PROOFGATE_WRITER_NATS_PASSWORD });
    others.push(wnc);
    const wjsm = await wnc.jetstreamManager();
    await expect(wjsm.streams.delete(STATE_STREAM)).rejects.toThrow(/Permissions Violation/);
    // A wrong password is not a way in.
    await expect(connect({ servers: nats.url, user: "proofgate-writer", pass: "guess", maxReconnectAttempts: 0 })).rejects.toThrow(/Authorization/i);

    const expected = [
      /Publish Violation - User "proofgate-sidecar", Subject "proofgate\.state\.customer\.forged"/,
      /Publish Violation - User "proofgate-sidecar", Subject "proofgate\.billing\.forged"/,
      /Subscription Violation - User "proofgate-billing", Subject "proofgate\.state\.>"/,
      /Publish Violation - User "proofgate-writer", Subject "\$JS\.API\.STREAM\.DELETE\.PROOFGATE_STATE"/,
    ];
    await waitFor(() => expected.every((re) => nats.violations().some((l) => re.test(l))), "the server to log each refusal");
    // Nothing forged reached the state stream.
    const forged = await wjsm.streams.getMessage(STATE_STREAM, { last_by_subj: "proofgate.state.customer.forged" }).catch(() => undefined);
    expect(forged).toBeUndefined();
  });
});
