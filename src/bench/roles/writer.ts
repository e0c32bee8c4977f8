/** A real writer (`startWriter`), alone in its process. */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { startWriter, writerOptions, type Writer } from "../../writer/index.js";
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
      start: async (a: { natsUrl: string; ledger: string }) => {
        writer = await startWriter(
          writerOptions({ natsUrl: a.natsUrl, ledger: a.ledger, grpcListen: "127.0.0.1:0", httpListen: "127.0.0.1:0", writerId: "bench" }),
          benchLogger("writer"),
        );
        const w = writer;
        const deadline = Date.now() + 30_000;
        while (!w.ready()) {
          if (Date.now() > deadline) throw new Error("writer not ready after 30 s");
          await new Promise((r) => setTimeout(r, 20));
        }
        return { grpc: w.grpcAddress };
      },
      head: () => ({ head: writer?.headRevision() ?? 0, rss: process.memoryUsage.rss() }),
    },
    async () => {
      await writer?.close();
    },
  );
}
