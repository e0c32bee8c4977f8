/** The writer's snapshot producer (`SnapshotProducer`), alone in its process. */
import { SnapshotProducer } from "#proofgate/snapshot/producer.js";
import { createRegistry } from "#proofgate/observability/metrics.js";
import { emit, serve } from "../ipc.js";
import { benchLogger, sleep } from "../util.js";

export function start(): void {
  let producer: SnapshotProducer | undefined;
  serve(
    {
      /** Builds its replica from the stream, then writes one snapshot; returns its revision and the times. */
      snapshot: async (a: { replica: string; natsUrl: string }) => {
        const t0 = performance.now();
        producer = new SnapshotProducer(
          { natsUrl: a.natsUrl, natsCreds: "", natsUser: "", natsPassword: "", natsToken: "", replica: a.replica, intervalMs: 3_600_000, keep: 3, streamReplicas: 1 },
          createRegistry(),
          benchLogger("snapshotter"),
        );
        producer.start();
        while (!producer.ready) await sleep(100);
        const t1 = performance.now();
        const revision = await producer.snapshotNow();
        emit("written", { revision });
        return { revision, replicaReadyMs: t1 - t0, writeMs: performance.now() - t1 };
      },
    },
    async () => {
      await producer?.close();
    },
  );
}
