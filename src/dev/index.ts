import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { stringify } from "yaml";
import { ROLES, tokenDigest } from "../auth/index.js";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../observability/logger.js";
import { parseCatalogText } from "../catalog/index.js";
import { startWriter, writerOptions, type Writer } from "../writer/index.js";
import { startSidecar, type Sidecar } from "../sidecar/index.js";
import { call, checkClient, devTokenPath, removeDevEndpoints, writeDevEndpoints, writerClients } from "../cli/client.js";
import type { ApplyCatalogResponse } from "../gen/proofgate/v1/admin.js";
import type { CheckResponse } from "../gen/proofgate/v1/check.js";
import type { PublishResponse } from "../gen/proofgate/v1/ingest.js";
import { IngestResult } from "../gen/proofgate/v1/ingest.js";
import { statusName } from "../policy/index.js";
import { NATS_INSTALL_HINT, NatsServer, natsServerAvailable } from "./nats-server.js";
import { DEMO_CUSTOMER, demoStory } from "./story.js";

export interface DevOptions {
  /** Use this NATS instead of starting one. */
  readonly natsUrl: string | undefined;
  readonly writerGrpc: string;
  readonly writerHttp: string;
  readonly sidecarGrpc: string;
  readonly sidecarHttp: string;
  readonly catalogPath: string;
  /** Length of the demo's first paid period; 0 skips the story. */
  readonly storyPeriodMs: number;
  /**
   * Stops start-up and the story at any point (Ctrl-C): what was started is closed, nothing more
   * is printed, and runDev rejects with DevAborted.
   */
  readonly signal?: AbortSignal;
}

export interface DevSystem {
  readonly natsUrl: string;
  readonly writer: Writer;
  readonly sidecar: Sidecar;
  close(): Promise<void>;
}

export class DevSetupError extends Error {}

/** runDev was stopped through its abort signal; everything it had started is closed. */
export class DevAborted extends Error {}

const FEATURES = ["api-access", "seats"] as const;

/** Starts NATS (unless given one), a writer, a sidecar, the demo catalog and the story. */
export async function runDev(o: DevOptions, output: (...lines: string[]) => void, logger: Logger): Promise<DevSystem> {
  if (!o.natsUrl && !natsServerAvailable()) throw new DevSetupError(NATS_INSTALL_HINT);
  // Start-up steps are short and each returns something to close, so they run to the end and the
  // abort is noticed between them; the long waits (readiness, the story's pauses) end at once.
  const { signal } = o;
  const stillWanted = (): void => {
    if (signal?.aborted) throw new DevAborted("stopped");
  };
  const aborted = new Promise<never>((_, reject) => {
    if (!signal) return;
    const fail = (): void => reject(new DevAborted("stopped"));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  aborted.catch(() => undefined);
  const abortable = <T>(p: Promise<T>): Promise<T> => Promise.race([p, aborted]);
  const print = (...lines: string[]): void => {
    stillWanted();
    output(...lines);
  };
  const dir = mkdtempSync(join(tmpdir(), "proofgate-dev-"));
  const closers: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const close = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) await c();
  };
  try {
    let natsUrl = o.natsUrl;
    if (!natsUrl) {
      const nats = await NatsServer.start();
      closers.push(() => nats.dispose());
      natsUrl = nats.url;
    }
    print(`NATS      ${natsUrl}${o.natsUrl ? "" : " (nats-server -js, temporary store)"}`);
    // One principal with every role; its token goes where the operator commands look for it.
    const token = randomBytes(32).toString("base64url");
    const authFile = join(dir, "auth.yaml");
    writeFileSync(authFile, stringify({ principals: [{ name: "proofgate-dev", roles: [...ROLES], token_sha256: tokenDigest(token) }] }), { mode: 0o600 });
    const writer = await startWriter(
      writerOptions({ natsUrl, ledger: join(dir, "ledger.db"), grpcListen: o.writerGrpc, httpListen: o.writerHttp, writerId: "dev", authFile }),
      logger,
    );
    closers.push(() => writer.close());
    const tokenPath = devTokenPath(writer.grpcAddress);
    mkdirSync(dirname(tokenPath), { recursive: true, mode: 0o700 });
    writeFileSync(tokenPath, `${token}\n`, { mode: 0o600 });
    closers.push(() => {
      // Another dev may have taken the address since: leave its token alone.
      if (existsSync(tokenPath) && readFileSync(tokenPath, "utf8").trim() === token) rmSync(tokenPath, { force: true });
    });
    print(`writer    gRPC ${writer.grpcAddress}   HTTP http://${writer.httpAddress}/metrics`);
    print(`          principal proofgate-dev (ingest, admin, read); token in ${tokenPath}, used by the operator commands`);
    const sidecar = await startSidecar({ natsUrl, replica: join(dir, "replica.db"), grpcListen: o.sidecarGrpc, httpListen: o.sidecarHttp }, logger);
    closers.push(() => sidecar.close());
    print(`sidecar   gRPC ${sidecar.grpcAddress ?? "-"}   HTTP http://${sidecar.httpAddress ?? "-"}/readyz`);

    // Operator commands in another terminal find this system without flags (src/cli/client.ts).
    writeDevEndpoints({ pid: process.pid, natsUrl, writer: writer.grpcAddress, sidecar: sidecar.grpcAddress ?? "", writerHttp: writer.httpAddress, sidecarHttp: sidecar.httpAddress ?? "" });
    closers.push(removeDevEndpoints);

    const { ingest, admin } = writerClients(writer.grpcAddress, token);
    const check = checkClient(sidecar.grpcAddress ?? "");
    closers.push(() => {
      ingest.close();
      admin.close();
      check.close();
    });
    const catalog = parseCatalogText(readFileSync(o.catalogPath, "utf8"));
    const applied = await abortable(call<ApplyCatalogResponse>((md, opts, cb) => admin.applyCatalog({ catalog, actor: "proofgate dev", reason: "demo catalog", allowRemovals: false }, md, opts, cb)));
    print(`catalog   ${o.catalogPath}: ${catalog.plans.map((p) => p.id).join(", ")} (revision ${applied.revision})`);
    await abortable(sidecar.whenReady());

    if (o.storyPeriodMs > 0) {
      print("", `The story of ${DEMO_CUSTOMER}, as the sidecar answers after each step:`);
      let step = 0;
      for (const beat of demoStory(o.storyPeriodMs)) {
        if (beat.waitMs) await sleep(beat.waitMs, undefined, signal ? { signal } : {});
        const events = beat.events(Date.now());
        let revision = sidecar.revision;
        if (events.length > 0) {
          const res = await abortable(call<PublishResponse>((md, opts, cb) => ingest.publish({ events }, md, opts, cb)));
          const rejected = res.results.find((r) => r.result === IngestResult.INGEST_RESULT_REJECTED);
          if (rejected) throw new Error(`demo event ${rejected.eventId} rejected: ${rejected.reason}`);
          revision = res.revision;
        }
        print(`${++step}. ${beat.title}`);
        for (const feature of FEATURES) {
          const d = await abortable(call<CheckResponse>((md, opts, cb) => check.check({ customerId: DEMO_CUSTOMER, feature, quantity: undefined, minRevision: revision }, md, opts, cb)));
          const value = d.allowed && d.limit !== undefined ? ` (limit ${d.limit})` : "";
          print(`     ${feature.padEnd(11)} ${d.allowed ? "allowed" : "denied "}  ${statusName(d.status).padEnd(16)} ${d.reason}${value}`);
        }
      }
    }
    const side = sidecar.grpcAddress ?? "";
    print(
      "",
      "proofgate is running. Try:",
      `  npx proofgate check --customer ${DEMO_CUSTOMER} --feature api-access --address ${side}`,
      `  npx proofgate explain --customer ${DEMO_CUSTOMER} --writer ${writer.grpcAddress}`,
      `  grpcurl -plaintext -d '{"customer_id":"${DEMO_CUSTOMER}","feature":"seats","quantity":2}' ${side} proofgate.v1.CheckService/Check`,
      `  grpcurl -plaintext ${writer.grpcAddress} list`,
      `  curl -s http://${sidecar.httpAddress ?? ""}/metrics | grep proofgate_`,
      `Console: http://${writer.httpAddress}/console/customer?id=${DEMO_CUSTOMER}  (the timeline, the audit trail, health; log in with the token in ${tokenPath})`,
      "Press Ctrl-C to stop.",
    );
    stillWanted();
    return { natsUrl, writer, sidecar, close };
  } catch (err) {
    await close();
    throw signal?.aborted ? new DevAborted("stopped") : err;
  }
}
