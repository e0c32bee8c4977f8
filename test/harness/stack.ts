/**
 * nats-server, a writer and a sidecar in this process, wired together: what the tests of a
 * feature that spans both services start with (end to end, ext_authz, reflection, examples).
 */
import type { Catalog } from "../../src/gen/proofgate/v1/catalog.js";
import { NatsServer } from "./nats.js";
import { startTestSidecar, testCatalog, type TestSidecar } from "./sidecar.js";
import { tempDir } from "./tmp.js";
import { waitFor } from "./wait.js";
import { startTestWriter, type TestWriter } from "./writer.js";

export interface TestStack {
  readonly nats: NatsServer;
  /** The test's own temp directory (the replica, the sidecar's socket, any config files). */
  readonly dir: string;
  readonly writer: TestWriter;
  readonly sc: TestSidecar;
  /** The revision at which the catalog was applied. */
  readonly catalogRevision: number;
  close(): Promise<void>;
}

export interface TestStackOptions {
  /** Default: the demo catalog (`testCatalog()`). */
  readonly catalog?: Catalog;
  /** Sidecar options; given the temp directory, e.g. to name config files written there first. */
  readonly sidecar?: (dir: string) => Omit<Parameters<typeof startTestSidecar>[0], "natsUrl" | "dir">;
}

/** Everything started, the catalog applied, the sidecar ready, caught up with it and fresh. */
export async function startTestStack(o: TestStackOptions = {}): Promise<TestStack> {
  const nats = await NatsServer.start();
  const dir = tempDir();
  const writer = await startTestWriter({ natsUrl: nats.url });
  await waitFor(() => writer.writer.ready(), "writer ready");
  const catalogRevision = await writer.client.applyCatalog(o.catalog ?? testCatalog());
  const sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path, ...o.sidecar?.(dir.path) });
  await sc.sidecar.whenReady();
  // Ready means caught up with the stream; fresh needs the writer's word (its heartbeat) too.
  await waitFor(() => sc.sidecar.revision >= catalogRevision && !sc.sidecar.stale, "sidecar current with the catalog, and fresh");
  return {
    nats,
    dir: dir.path,
    writer,
    sc,
    catalogRevision,
    close: async () => {
      await sc.close();
      await writer.dispose();
      await nats.dispose();
      dir.dispose();
    },
  };
}
