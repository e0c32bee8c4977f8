import { createServer } from "node:net";
import { connect } from "nats";
import { NatsServer } from "../../src/dev/nats-server.js";
import { waitFor } from "./wait.js";

/**
 * A real `nats-server -js` for tests: ephemeral port, its own temp store, log shown only on
 * failure (`log()`). The same class runs NATS for `proofgate dev`.
 */
export { NatsServer };

/** A free loopback port, for the route listeners every node must know in advance. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/**
 * Three `nats-server -js` nodes routed into one JetStream cluster on loopback, each with its own
 * store; a node stopped and started again keeps its client and route ports. `url` lists every node,
 * as a production client would.
 */
export class NatsCluster {
  private constructor(readonly nodes: readonly NatsServer[]) {}

  static async start(size = 3): Promise<NatsCluster> {
    const routes = await Promise.all(Array.from({ length: size }, freePort));
    const nodes: NatsServer[] = [];
    try {
      for (const [i, port] of routes.entries())
        nodes.push(await NatsServer.start({ monitor: true, cluster: { name: "proofgate-test", serverName: `n${i + 1}`, port, routes } }));
      const cluster = new NatsCluster(nodes);
      await cluster.jetStreamReady();
      return cluster;
    } catch (err) {
      for (const n of nodes) await n.dispose();
      throw err;
    }
  }

  get url(): string {
    return this.nodes.map((n) => n.url).join(",");
  }

  /**
   * Every node is up and says so on `/healthz`: in nats-server 2.9 that is JetStream's own
   * readiness (the node has caught up with the meta group and with every stream and consumer it
   * holds a replica of), the probe a NATS deployment gates a rolling restart on. Another node may
   * be lost only then.
   */
  async healthy(): Promise<boolean> {
    for (const n of this.nodes) {
      if (!n.running) return false;
      const res = await fetch(`http://127.0.0.1:${n.monitorPort}/healthz`).catch(() => undefined);
      if (res?.status !== 200) return false;
    }
    return true;
  }

  /** Resolves once the cluster has a JetStream meta leader (streams can be created). */
  async jetStreamReady(timeoutMs = 30_000): Promise<void> {
    const nc = await connect({ servers: this.nodes.filter((n) => n.running).map((n) => n.url) });
    try {
      await waitFor(
        async () => {
          try {
            await (await nc.jetstreamManager({ timeout: 1_000 })).getAccountInfo();
            return true;
          } catch {
            return undefined;
          }
        },
        "a JetStream meta leader in the NATS cluster",
        timeoutMs,
      );
    } finally {
      await nc.close();
    }
  }

  async dispose(): Promise<void> {
    for (const n of this.nodes) await n.dispose();
  }
}
