import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsServer } from "../harness/nats.js";
import { StatePublisher, paidCustomer, startTestSidecar, testCatalog, waitFor, type TestSidecar } from "../harness/sidecar.js";
import { tempDir } from "../harness/tmp.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

/**
 * The package as a product team gets it: `npm pack`, installed into a fresh project (with its own
 * @grpc/grpc-js, as an application has), imported as `proofgate/client` from JavaScript and type
 * checked from TypeScript, and used against a running sidecar in both modes.
 *
 * Needs `dist/` (`npm test` builds it first; `prepack` builds it when a tarball is published).
 */
const APP_JS = `
import * as grpc from "@grpc/grpc-js";
import { ProofgateClient, UnavailableError } from "proofgate/client";
import { CheckServiceClient } from "proofgate/gen/proofgate/v1/check.js";

const [address, replica, customerId] = process.argv.slice(2);
const out = {};
const viaGrpc = new ProofgateClient({ address, replica: false });
out.grpc = await viaGrpc.check({ customerId, feature: "api-access" });
const local = new ProofgateClient({ address, replica });
out.local = await local.check({ customerId, feature: "api-access" });
out.localMode = local.mode;
out.batch = await local.checkBatch([{ customerId, feature: "seats", quantity: 1 }, { customerId, feature: "seats", quantity: 2 }]);
out.list = (await local.listEntitlements(customerId)).entitlements.map((e) => e.feature + "=" + e.status);
// The generated client with this application's grpc-js credentials: one copy of grpc-js.
const raw = new CheckServiceClient(address, grpc.credentials.createInsecure());
out.raw = await new Promise((resolve, reject) => raw.check({ customerId, feature: "api-access" }, (err, res) => (err ? reject(err) : resolve(res.status))));
const down = new ProofgateClient({ address: "127.0.0.1:1", replica: false, deadlineMs: 300, failPolicy: { features: { "api-access": "open" }, default: "throw" } });
out.failOpen = await down.check({ customerId, feature: "api-access" });
out.thrown = await down.check({ customerId, feature: "seats" }).then(() => "no error", (e) => (e instanceof UnavailableError ? "UnavailableError" : String(e)));
for (const c of [viaGrpc, local, down]) c.close();
raw.close();
console.log(JSON.stringify(out));
`;

const APP_TS = `
import { ProofgateClient, type CheckResult, type AccessStatusName } from "proofgate/client";
import { AccessStatus } from "proofgate/gen/proofgate/v1/check.js";

const client = new ProofgateClient({ address: "unix:/var/run/proofgate/sidecar.sock", failPolicy: { default: "closed" } });
export async function allowed(customerId: string): Promise<boolean> {
  const r: CheckResult = await client.check({ customerId, feature: "api-access", minRevision: 3 }, { deadlineMs: 200 });
  const s: AccessStatusName = r.status;
  const until: Date | undefined = r.validUntil;
  return r.allowed && s !== "BLOCKED" && until !== null && AccessStatus.ACCESS_STATUS_GRANTED === 1;
}
`;

describe("the packed package, installed into another project", () => {
  let nats: NatsServer;
  let dir: ReturnType<typeof tempDir>;
  let sc: TestSidecar;
  let pub: StatePublisher;
  let app: string;

  beforeAll(async () => {
    dir = tempDir("proofgate-pack-");
    app = join(dir.path, "app");
    mkdirSync(app);
    const { stdout } = await run(NPM, ["pack", "--ignore-scripts", "--json", "--pack-destination", dir.path], { cwd: ROOT, maxBuffer: 16 * 2 ** 20 });
    const packed = (JSON.parse(stdout) as { filename: string; files: { path: string }[] }[])[0];
    if (!packed) throw new Error(`npm pack printed nothing: ${stdout}`);
    const files = packed.files.map((f) => f.path);
    expect(files).toContain("dist/client/index.js");
    expect(files).toContain("dist/client/index.d.ts");
    expect(files).toContain("dist/gen/proofgate/v1/check.d.ts");
    expect(files).toContain("proto/proofgate/v1/check.proto");
    expect(files.some((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("bench/"))).toBe(false);

    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }));
    const grpcVersion = (JSON.parse(readFileSync(join(ROOT, "node_modules/@grpc/grpc-js/package.json"), "utf8")) as { version: string }).version;
    // From the local npm cache where it can. Install scripts are skipped: better-sqlite3's would
    // compile SQLite for minutes; the repository's build of the same version is copied instead.
    await run(NPM, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", join(dir.path, packed.filename), `@grpc/grpc-js@${grpcVersion}`], {
      cwd: app,
      maxBuffer: 16 * 2 ** 20,
      timeout: 240_000,
    });
    const native = "node_modules/better-sqlite3/build/Release";
    mkdirSync(join(app, native), { recursive: true });
    copyFileSync(join(ROOT, native, "better_sqlite3.node"), join(app, native, "better_sqlite3.node"));

    nats = await NatsServer.start();
    pub = await StatePublisher.connect(nats.url);
    sc = await startTestSidecar({ natsUrl: nats.url, dir: dir.path });
    await pub.catalog(testCatalog({ coherencyWindowMs: 3_600_000 }));
    const rev = await pub.document(paidCustomer("cus_pack", "premium", Date.now()));
    await waitFor(() => sc.sidecar.revision >= rev && !sc.sidecar.stale, "sidecar current");
  }, 300_000);

  afterAll(async () => {
    await sc.close();
    await pub.close();
    await nats.dispose();
    dir.dispose();
  });

  it("has a single @grpc/grpc-js: the application's (a peer dependency)", () => {
    const copies = (d: string): string[] =>
      readdirSync(d, { withFileTypes: true }).flatMap((e) => {
        if (!e.isDirectory()) return [];
        const p = join(d, e.name);
        return p.endsWith(join("@grpc", "grpc-js")) ? [p] : copies(p);
      });
    expect(copies(join(app, "node_modules")).map((p) => p.slice(app.length + 1))).toEqual([join("node_modules", "@grpc", "grpc-js")]);
    expect(existsSync(join(app, "node_modules/proofgate/node_modules/@grpc/grpc-js"))).toBe(false);
  });

  it("answers from a JavaScript project, over gRPC and in local mode", async () => {
    writeFileSync(join(app, "app.mjs"), APP_JS);
    const address = sc.sidecar.grpcAddress ?? "";
    const { stdout } = await run(process.execPath, ["app.mjs", address, join(dir.path, "replica.db"), "cus_pack"], { cwd: app, timeout: 60_000 });
    interface Answer {
      allowed: boolean;
      status: string;
      source: string;
      revision: number;
      stale: boolean;
    }
    const out = JSON.parse(stdout) as {
      grpc: Answer;
      local: Answer;
      localMode: string;
      batch: { results: Answer[] };
      list: string[];
      raw: number;
      failOpen: Answer;
      thrown: string;
    };
    expect(out.grpc).toMatchObject({ allowed: true, status: "GRANTED", source: "sidecar", stale: false });
    expect(out.local).toMatchObject({ allowed: true, status: "GRANTED", source: "local", stale: false, revision: out.grpc.revision });
    expect(out.localMode).toBe("local");
    expect(out.batch.results.map((r) => r.status)).toEqual(["GRANTED", "LIMIT_EXCEEDED"]);
    expect(out.list).toContain("api-access=GRANTED");
    expect(out.raw).toBe(1);
    expect(out.failOpen).toMatchObject({ allowed: true, status: "SIDECAR_UNAVAILABLE", source: "fail-policy", stale: true });
    expect(out.thrown).toBe("UnavailableError");
  });

  it("type checks from a TypeScript project with the shipped declarations", async () => {
    writeFileSync(join(app, "app.ts"), APP_TS);
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: [] }, files: ["app.ts"] }),
    );
    const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
    const result = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app, timeout: 120_000 }).then(
      () => "ok",
      (err: unknown) => (err as { stdout?: string }).stdout ?? "tsc failed",
    );
    expect(result).toBe("ok");
    // And a wrong use is an error: the types are really there, not `any`.
    writeFileSync(join(app, "app.ts"), `${APP_TS}\nexport const wrong: number = client.mode;\n`);
    const wrong = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app, timeout: 120_000 }).then(
      () => "no error",
      (err: unknown) => (err as { stdout?: string }).stdout ?? "",
    );
    expect(wrong).toMatch(/app\.ts.*error TS2322/);
  });
});
