import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "nats";
import { NatsServer } from "./harness/nats.js";

describe("nats-server harness", () => {
  let nats: NatsServer;
  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterAll(async () => {
    await nats.dispose();
  });

  it("starts JetStream on an ephemeral port and restarts on the same one", async () => {
    expect(nats.port).toBeGreaterThan(0);
    expect(nats.port).not.toBe(4222);
    const nc = await connect({ servers: nats.url });
    const info = await (await nc.jetstreamManager()).getAccountInfo();
    expect(info.streams).toBe(0);
    await nc.close();
    const port = nats.port;
    await nats.restart();
    expect(nats.port).toBe(port);
  });
});
