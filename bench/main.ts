/**
 * `npm run bench [-- --quick] [-- --only eval,sidecar,writer] [-- --customers N] [-- --profile sidecar]`
 *
 * Runs the benchmarks against the design's targets, each role in its own process on loopback,
 * prints a table and writes bench/results/latest.json (machine, versions, parameters, figures).
 * See BENCHMARKS.md for the method.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { natsServerAvailable, NATS_INSTALL_HINT } from "#proofgate/dev/nats-server.js";
import { SIDECAR_NODE_OPTIONS, SIDECAR_V8_FLAGS } from "#proofgate/sidecar/options.js";
import { config } from "./config.js";
import { Child } from "./ipc.js";
import { busyCpu, cpuSnapshot, machine, othersBusy, versions } from "./machine.js";
import { render, verdicts, type EvalResults, type Results } from "./report.js";
import { sidecarSuite, type Env } from "./suites/sidecar.js";
import { writerSuite } from "./suites/writer.js";
import { snapshotSuite } from "./suites/snapshot.js";
import { lazySuite } from "./suites/lazy.js";
import { podSuite } from "./suites/pod.js";
import { herdSuite } from "./suites/herd.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** A deployed sidecar's flags: the Helm chart's NODE_OPTIONS and the V8 flags `proofgate sidecar` sets on itself. */
const SIDECAR_FLAGS = `${SIDECAR_NODE_OPTIONS} ${SIDECAR_V8_FLAGS}`;
const GROUPS = ["eval", "sidecar", "snapshot", "lazy", "writer", "pod", "herd"] as const;

const USAGE = `usage: npm run bench [-- options]
  --quick            about a minute: 50k customers, short runs (figures are indicative)
  --customers N      customers in the sidecar benchmark (default 1,000,000; quick 50,000)
  --only LIST        comma-separated subset of: ${GROUPS.join(", ")}
  --herd N           cold sidecars started at once in the herds (default 20; quick 4); 0 skips the herds
                     (the 10M-customer run: --customers 10000000 --only snapshot --herd 0, see BENCHMARKS.md)
  --out FILE         results JSON (default bench/results/latest.json)
  --profile ROLES    comma-separated roles to run with node --cpu-prof (sidecar, load, echo, writer, drive, seed, evaluate);
                     profiles (one per process and thread) go to <work directory>/profiles/<role>, which is then kept
  --e2e-only         writer group: event → enforcement only (no history rows, no ingest rows)
  --e2e-rates LIST   writer group: event → enforcement rates (events/s), e.g. 200,1000 (default 200 then a ladder)
  --keep             keep the temporary directory (replica, ledger, service logs)
  --sidecar-node-options=FLAGS
                     node flags for the sidecar processes and their echo floor (default: a deployed sidecar's,
                     "${SIDECAR_FLAGS}"; "" for Node's defaults; recorded in the results)`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      customers: { type: "string" },
      herd: { type: "string" },
      only: { type: "string" },
      out: { type: "string" },
      profile: { type: "string" },
      keep: { type: "boolean", default: false },
      "e2e-only": { type: "boolean", default: false },
      "e2e-rates": { type: "string" },
      "sidecar-node-options": { type: "string", default: SIDECAR_FLAGS },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!natsServerAvailable()) throw new Error(NATS_INSTALL_HINT);
  const preset = config(values.quick, values.customers ? Number(values.customers) : undefined);
  const herd = values.herd === undefined ? undefined : Number(values.herd);
  if (herd !== undefined && !(Number.isInteger(herd) && herd >= 0 && herd <= 100)) throw new Error(`--herd: expected a whole number from 0 to 100, got "${values.herd}"`);
  const rates = values["e2e-rates"]?.split(",").map((x) => Number(x.trim()));
  if (rates && !(rates.length > 0 && rates.every((r) => Number.isInteger(r) && r > 0 && r <= 100_000)))
    throw new Error(`--e2e-rates: expected events/s as whole numbers from 1 to 100,000, comma-separated, got "${values["e2e-rates"]}"`);
  const cfg = {
    ...preset,
    ...(herd === undefined ? {} : { herd }),
    ...(rates ? { e2e: { ...preset.e2e, rate: rates[0] ?? preset.e2e.rate, ladder: rates.slice(1) } } : {}),
    ...(values["e2e-only"] ? { history: { ...preset.history, facts: [] }, ingest: { ...preset.ingest, batches: [], natsCount: 0 } } : {}),
  };
  const only = new Set((values.only ?? GROUPS.join(",")).split(",").map((s) => s.trim()));
  for (const g of only) if (!(GROUPS as readonly string[]).includes(g)) throw new Error(`--only: unknown group "${g}" (${GROUPS.join(", ")})`);
  const profiled = new Set((values.profile ?? "").split(",").filter(Boolean));
  const sidecarNodeOptions = values["sidecar-node-options"].split(/\s+/).filter(Boolean);
  const out = values.out ?? join(ROOT, "bench/results/latest.json");
  const dir = mkdtempSync(join(tmpdir(), "proofgate-bench-"));
  const profileDir = join(dir, "profiles");
  if (profiled.size) mkdirSync(profileDir, { recursive: true });
  // Other work on the machine skews every figure: measure it before starting, and say so.
  const background = await busyCpu(2_000);
  const cpuAtStart = cpuSnapshot();
  const host = machine();
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const log = (line: string): void => {
    console.error(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);
  };
  const env: Env = {
    dir,
    log,
    execArgv: (role) => [
      // The echo floor runs as the sidecar does (same V8 flags, as it has the same server options):
      // the ratio is then proofgate's work, not a memory setting (whose cost BENCHMARKS.md shows apart).
      ...(role === "sidecar" || role === "echo" ? sidecarNodeOptions : []),
      // Node's own file names (process and thread ids): a worker thread writes its own profile.
      ...(profiled.has(role) ? ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, role)}`] : []),
    ],
    logEnv: { PROOFGATE_BENCH_LOG: join(dir, "services.log") },
  };
  log(`proofgate benchmark, ${cfg.quick ? "quick" : "full"} run; work directory ${dir}`);
  if (background !== undefined && background > 0.1)
    log(`warning: the machine was ${Math.round(background * 100)}% busy before the benchmark started (other processes); figures will be noisy`);
  const results: Results = {};
  let failed: unknown;
  try {
    if (only.has("eval")) {
      log("evaluation alone, in process");
      const ev = await Child.fork("evaluate", { execArgv: env.execArgv("evaluate") });
      results.evaluate = await ev.call<EvalResults>("run", { docs: cfg.evaluate.docs, templates: cfg.templates, seed: 7, ms: cfg.evaluate.ms });
      await ev.stop();
    }
    if (only.has("sidecar")) results.sidecar = await sidecarSuite(cfg, env);
    if (only.has("snapshot")) results.snapshot = await snapshotSuite(cfg, env);
    if (only.has("lazy")) results.lazy = await lazySuite(cfg, env);
    if (only.has("writer")) results.writer = await writerSuite(cfg, env);
    if (only.has("pod")) results.pod = await podSuite(cfg, env);
    if (only.has("herd")) {
      const h = await herdSuite(cfg, env);
      if (h) results.herd = h;
    }
  } catch (err) {
    failed = err;
    console.error(err);
    console.error(`service logs: ${join(dir, "services.log")}`);
  }
  const others = othersBusy(cpuAtStart, cpuSnapshot());
  if (others !== undefined && others > 0.1) log(`warning: other processes kept ${Math.round(others * 100)}% of the machine's CPU busy during the run; figures are noisy`);
  const v = verdicts(cfg, results);
  const durationS = Math.round((performance.now() - t0) / 100) / 10;
  const json = {
    schema: 1,
    mode: cfg.quick ? "quick" : "full",
    startedAt,
    durationS,
    complete: failed === undefined && GROUPS.every((g) => only.has(g)),
    machine: { ...host, busyBeforeStart: background === undefined ? undefined : Math.round(background * 1000) / 1000, othersBusyDuringRun: others === undefined ? undefined : Math.round(others * 1000) / 1000, loadAverageAtEnd: loadavg() },
    versions: versions(),
    parameters: { ...cfg, sidecarNodeOptions },
    targets: v,
    results,
    ...(failed ? { error: failed instanceof Error ? failed.message : JSON.stringify(failed) } : {}),
  };
  mkdirSync(join(out, ".."), { recursive: true });
  writeFileSync(out, JSON.stringify(json, null, 2) + "\n");
  const m = json.machine;
  const pct = (x: number | undefined): string => (x === undefined ? "?" : `${Math.round(x * 100)}%`);
  console.log(
    `\nproofgate ${String(json.versions["proofgate"])} (${String(json.versions["commit"])}${json.versions["srcDirty"] ? ", uncommitted changes in src/ or bench/" : ""}), ${cfg.quick ? "quick" : "full"} run on ${m.cpu} ×${m.cores}, ` +
      `${Math.round(m.memoryBytes / 2 ** 30)} GiB, Node ${process.version}; other processes' CPU: ${pct(background)} before, ${pct(others)} during the run`,
  );
  console.log("\n" + render(cfg, results, v));
  console.log(`\n${cfg.quick ? "Quick" : "Full"} run took ${durationS} s; results in ${out}`);
  if (values.keep || failed || profiled.size) console.error(`work directory kept: ${dir}${profiled.size ? ` (profiles in ${profileDir})` : ""}`);
  else rmSync(dir, { recursive: true, force: true });
  if (failed) process.exitCode = 1;
}

await main();
