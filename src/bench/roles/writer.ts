/** A real writer (`startWriter`), alone in its process. */
import { startWriter, writerOptions, type Writer } from "../../writer/index.js";
import { serve } from "../ipc.js";
import { benchLogger } from "../util.js";

export function start(): void {
  let writer: Writer | undefined;
  serve(
    {
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
