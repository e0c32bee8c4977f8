import { afterAll, expect, test, vi } from "vitest";
import { silentLogger } from "../../src/observability/logger.js";
import { NatsServer } from "../harness/nats.js";
import { waitFor } from "../harness/wait.js";

/**
 * The writer's NATS link announces itself ready only on the live connection. A real nats-server;
 * the one seam is a gate after the last stream is set up (the input stream), so that a shutdown
 * can begin exactly while the link is setting up: in CI a ready listener once subscribed on the
 * draining connection and the writer crashed with CONNECTION_DRAINING.
 */
const gate = vi.hoisted(() => ({ hold: false, reached: (): void => undefined, release: (): void => undefined }));

vi.mock("../../src/writer/ha/inputs.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../src/writer/ha/inputs.js")>();
  return {
    ...actual,
    ensureInputStream: async (...args: Parameters<typeof actual.ensureInputStream>): Promise<void> => {
      await actual.ensureInputStream(...args);
      if (gate.hold) {
        gate.reached();
        await new Promise<void>((resolve) => (gate.release = resolve));
      }
    },
  };
});

const { NatsLink } = await import("../../src/writer/nats-link.js");

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function link(): Promise<{ link: InstanceType<typeof NatsLink>; announced: string[] }> {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.dispose());
  const l = new NatsLink(
    { natsUrl: nats.url, natsCreds: "", natsUser: "", natsPassword: "", natsToken: "", streamReplicas: 1, writerId: "w-link-test" },
    silentLogger(),
  );
  cleanup.push(() => l.close());
  const announced: string[] = [];
  // What the console's sidecar directory does when the link is ready: subscribe on its connection.
  l.onReady(() => {
    const sub = l.ready?.nc.subscribe("proofgate.test.ready");
    announced.push(sub ? "subscribed" : "no handles");
  });
  return { link: l, announced };
}

test("set up undisturbed, the link is ready once and its listeners run on the live connection", async () => {
  gate.hold = false;
  const { link: l, announced } = await link();
  l.start();
  await waitFor(() => l.ready !== undefined, "the link ready");
  expect(announced).toEqual(["subscribed"]);
  await l.close();
  expect(l.ready).toBeUndefined();
});

test("a shutdown that begins while the streams are set up: never announced ready, and not ready afterwards", async () => {
  gate.hold = true;
  const reached = new Promise<void>((resolve) => (gate.reached = resolve));
  const { link: l, announced } = await link();
  l.start();
  await reached;
  const closing = l.close();
  gate.release();
  await closing;
  expect(announced).toEqual([]);
  expect(l.ready).toBeUndefined();
});
