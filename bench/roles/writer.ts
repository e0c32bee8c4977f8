/** A real writer (`startWriter`), alone in its process. */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Counter, Registry } from "prom-client";
import { stringify } from "yaml";
import { Gate, PrincipalTable, ROLES, tokenDigest } from "#proofgate/auth/index.js";
import { startWriter, writerOptions, type Writer } from "#proofgate/writer/index.js";
import { serve } from "../ipc.js";
import { benchLogger } from "../util.js";

export function start(): void {
  let writer: Writer | undefined;
  // Sampled only while asked: the ledger is synchronous, so a long commit, checkpoint or prune delays every event behind it.
  const loop = monitorEventLoopDelay({ resolution: 1 });
  serve(
    {
      loopDelayStart: () => {
        loop.reset();
        loop.enable();
        return {};
      },
      /** Event-loop delay since the last call (ms), then stops sampling. */
      loopDelayStop: () => {
        loop.disable();
        const r = { p50_ms: loop.percentile(50) / 1e6, p99_ms: loop.percentile(99) / 1e6, max_ms: loop.max / 1e6 };
        loop.reset();
        return r;
      },
      /**
       * What authentication adds to each writer call, alone: the writer's Gate over a table of
       * 100 principals (SHA-256 of the bearer token, lookup, role check, the calls counter).
       */
      authCost: (a: { calls: number }) => {
        const tokens = Array.from({ length: 100 }, (_, i) => `bench-token-${i}-${randomBytes(16).toString("hex")}`);
        const table = PrincipalTable.parse(stringify({ principals: tokens.map((t, i) => ({ name: `p${i}`, roles: ["ingest"], token_sha256: tokenDigest(t) })) }));
        const calls = new Counter({ name: "bench_calls_total", help: "-", labelNames: ["method", "principal"] as const, registers: [new Registry()] });
        const gate = new Gate(table, () => undefined, (method, p) => calls.inc({ method, principal: p.name }));
        const creds = { authorization: `Bearer ${tokens[42] ?? ""}`, certificateIdentities: [] };
        for (let i = 0; i < 10_000; i++) gate.authorize("IngestService.Publish", "ingest", creds);
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < a.calls; i++) gate.authorize("IngestService.Publish", "ingest", creds);
        return { perCall_us: Number(process.hrtime.bigint() - t0) / 1000 / a.calls };
      },
      start: async (a: { natsUrl: string; ledger: string }) => {
        const token = randomBytes(32).toString("base64url");
        const authFile = join(dirname(a.ledger), "auth.yaml");
        writeFileSync(authFile, stringify({ principals: [{ name: "bench", roles: [...ROLES], token_sha256: tokenDigest(token) }] }));
        writer = await startWriter(
          writerOptions({ natsUrl: a.natsUrl, ledger: a.ledger, grpcListen: "127.0.0.1:0", httpListen: "127.0.0.1:0", writerId: "bench", authFile }),
          benchLogger("writer"),
        );
        const w = writer;
        const deadline = Date.now() + 30_000;
        while (!w.ready()) {
          if (Date.now() > deadline) throw new Error("writer not ready after 30 s");
          await new Promise((r) => setTimeout(r, 20));
        }
        return { grpc: w.grpcAddress, token };
      },
      head: () => ({ head: writer?.headRevision() ?? 0, rss: process.memoryUsage.rss() }),
    },
    async () => {
      await writer?.close();
    },
  );
}
