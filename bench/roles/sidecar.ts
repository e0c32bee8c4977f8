/** A real sidecar (`startSidecar`), alone in its process. */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { startSidecar, type Sidecar } from "#proofgate/sidecar/index.js";
import { emit, serve } from "../ipc.js";
import { benchLogger } from "../util.js";

export function start(): void {
  let sidecar: Sidecar | undefined;
  let startedAt = 0;
  let watch: NodeJS.Timeout | undefined;
  // Event-loop delay, sampled every millisecond: only while asked (`loopDelayStart`), since the
  // timer's wake-ups would cost CPU in the latency runs, where the echo server has none.
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const s = (): Sidecar => {
    if (!sidecar) throw new Error("sidecar not started");
    return sidecar;
  };
  serve(
    {
      start: async (a: { replica: string; natsUrl: string; socket?: string; extAuthzRules?: string; snapshotBootstrap?: boolean; mode?: "full" | "lazy"; lazyMaxCustomers?: number }) => {
        const uptimeMs = process.uptime() * 1000;
        startedAt = performance.now();
        sidecar = await startSidecar(
          // ext_authz, when asked for, on the Check listeners: the same transport for both.
          {
            replica: a.replica,
            natsUrl: a.natsUrl,
            grpcListen: "127.0.0.1:0",
            grpcSocket: a.socket ?? "",
            httpListen: "",
            extAuthzRules: a.extAuthzRules ?? "",
            snapshotBootstrap: a.snapshotBootstrap ?? false,
            ...(a.mode ? { mode: a.mode } : {}),
            ...(a.lazyMaxCustomers ? { lazyMaxCustomers: a.lazyMaxCustomers } : {}),
          },
          benchLogger("sidecar"),
        );
        return { tcp: sidecar.grpcAddress, unix: sidecar.grpcSocketAddress, listenMs: performance.now() - startedAt, uptimeAtStartMs: uptimeMs, revision: sidecar.revision };
      },
      /** Resolves once ready: ms from the start call, and from the process's own start. */
      ready: async () => {
        await s().whenReady();
        const now = performance.now();
        return { readyMs: now - startedAt, sinceProcessStartMs: process.uptime() * 1000, revision: s().revision };
      },
      /** Resolves once answers are fresh (a writer heartbeat confirmed the replica current); false after `timeoutMs`. */
      fresh: async (a: { timeoutMs: number }) => {
        const until = performance.now() + a.timeoutMs;
        while (s().stale) {
          if (performance.now() > until) return { fresh: false };
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        return { fresh: true };
      },
      waitRevision: async (a: { revision: number; timeoutMs: number }) => {
        const t = performance.now();
        const reached = await s().waitForRevision(a.revision, a.timeoutMs);
        return { reached, ms: performance.now() - t, revision: s().revision };
      },
      /** Emits `progress` samples every `intervalMs` until `unwatch`. */
      watch: (a: { intervalMs: number }) => {
        clearInterval(watch);
        watch = setInterval(() => {
          const sc = sidecar;
          if (sc) emit("progress", { t: performance.now() - startedAt, revision: sc.revision, ready: sc.ready, rss: process.memoryUsage.rss() });
        }, a.intervalMs);
        return {};
      },
      unwatch: () => {
        clearInterval(watch);
        return {};
      },
      status: () => {
        const m = process.memoryUsage();
        return { revision: sidecar?.revision ?? 0, ready: sidecar?.ready ?? false, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
      },
      loopDelayStart: () => {
        loop.reset();
        loop.enable();
        return {};
      },
      loopDelayStop: () => {
        loop.disable();
        return {};
      },
      /** Event-loop delay since the last call (ms): what a check queued behind other work waits. */
      loopDelay: () => {
        const r = { p50_ms: loop.percentile(50) / 1e6, p99_ms: loop.percentile(99) / 1e6, max_ms: loop.max / 1e6 };
        loop.reset();
        return r;
      },
      /** A V8 heap snapshot into `dir` (for looking into memory); returns its path. */
      heapSnapshot: async (a: { dir: string }) => {
        const { writeHeapSnapshot } = await import("node:v8");
        return { path: writeHeapSnapshot(`${a.dir}/sidecar-${process.pid}-${Date.now()}.heapsnapshot`) };
      },
    },
    async () => {
      clearInterval(watch);
      await sidecar?.close();
    },
  );
}
