import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestStack, type TestStack } from "../harness/stack.js";
import { type TestSidecar } from "../harness/sidecar.js";
import { type TestWriter } from "../harness/writer.js";

/** What `grpcurl list` would print: the services a server advertises through reflection v1. */
async function listServices(address: string): Promise<string[]> {
  const protoRoot = join(dirname(createRequire(import.meta.url).resolve("@grpc/reflection")), "../proto");
  const def = protoLoader.loadSync("grpc/reflection/v1/reflection.proto", { includeDirs: [protoRoot] });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure()) as grpc.Client & {
    serverReflectionInfo(): grpc.ClientDuplexStream<object, { listServicesResponse?: { service: { name: string }[] } }>;
  };
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.serverReflectionInfo();
      call.on("data", (res: { listServicesResponse?: { service: { name: string }[] } }) => {
        resolve((res.listServicesResponse?.service ?? []).map((s) => s.name).sort());
        call.end();
      });
      call.on("error", reject);
      call.write({ listServices: "*" });
    });
  } finally {
    client.close();
  }
}

describe("gRPC reflection", () => {
  let stack: TestStack;
  let writer: TestWriter;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    stack = await startTestStack();
    ({ writer, sc: sidecar } = stack);
  });
  afterAll(() => stack.close());

  it("the writer advertises only the services it answers", async () => {
    const names = await listServices(writer.writer.grpcAddress);
    expect(names).toContain("proofgate.v1.IngestService");
    expect(names).toContain("proofgate.v1.AdminService");
    expect(names).not.toContain("proofgate.v1.CheckService");
  });

  it("the sidecar advertises only the services it answers", async () => {
    const names = await listServices(sidecar.sidecar.grpcAddress ?? "");
    expect(names).toContain("proofgate.v1.CheckService");
    expect(names).not.toContain("proofgate.v1.AdminService");
    expect(names).not.toContain("proofgate.v1.IngestService");
  });
});
