import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./helm.js";

/**
 * No Docker engine runs here, so the Dockerfile is checked by reading it: the stages, what the
 * runtime image contains, who it runs as, and that every file it copies from the build context
 * exists and is not excluded by .dockerignore.
 */

interface Instruction {
  readonly op: string;
  readonly args: string;
}
interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

function parseDockerfile(text: string): { preamble: Instruction[]; stages: Stage[] } {
  // Drop comment lines (as Docker does, also inside continuations), join continuations.
  const lines = text
    .split(/\r?\n/)
    .filter((l) => !l.trim().startsWith("#"))
    .join("\n")
    .replace(/\\\r?\n/g, " ")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const preamble: Instruction[] = [];
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m?.[1] || m[2] === undefined) throw new Error(`cannot parse Dockerfile line: ${line}`);
    const ins = { op: m[1].toUpperCase(), args: m[2].trim() };
    if (ins.op === "FROM") {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      stages.push({ from: f?.[1] ?? "", name: f?.[2], instructions: [] });
    } else if (stages.length === 0) preamble.push(ins);
    else stages[stages.length - 1]?.instructions.push(ins);
  }
  return { preamble, stages };
}

const dockerfile = parseDockerfile(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
const build = dockerfile.stages[0];
const runtime = dockerfile.stages[dockerfile.stages.length - 1];
const all = (stage: Stage | undefined, op: string): string[] => (stage?.instructions ?? []).filter((i) => i.op === op).map((i) => i.args);

/** COPY sources and destination, without flags. */
function copies(stage: Stage | undefined): { from: string | undefined; sources: string[]; dest: string }[] {
  return all(stage, "COPY").map((args) => {
    const words = args.split(/\s+/);
    const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
    const paths = words.filter((w) => !w.startsWith("--"));
    return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1] ?? "" };
  });
}

describe("Dockerfile", () => {
  it("builds in node:20-bookworm and runs in node:20-bookworm-slim", () => {
    expect(dockerfile.preamble).toContainEqual({ op: "ARG", args: "NODE_VERSION=20" });
    expect(dockerfile.stages.map((s) => [s.from, s.name])).toEqual([
      ["node:${NODE_VERSION}-bookworm", "build"],
      ["node:${NODE_VERSION}-bookworm-slim", "runtime"],
    ]);
  });

  it("compiles better-sqlite3 from source, builds, and prunes dev dependencies in the build stage", () => {
    const env = all(build, "ENV").join(" ");
    expect(env).toMatch(/npm_config_build_from_source=better-sqlite3/);
    const runs = all(build, "RUN").join("\n");
    expect(runs).toMatch(/npm (ci|install)\b/);
    expect(runs).toMatch(/require\('better-sqlite3'\)/);
    expect(runs).toMatch(/npm run build/);
    expect(runs).toMatch(/npm prune --omit=dev/);
    // The build script compiles src/ into dist/, where bin/proofgate.js looks for the CLI.
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { type: string; scripts: Record<string, string> };
    expect(pkg.scripts["build"]).toBe("tsc -p tsconfig.build.json");
    expect(pkg.type).toBe("module");
    const tsBuild = JSON.parse(readFileSync(join(ROOT, "tsconfig.build.json"), "utf8")) as { compilerOptions: { rootDir: string; outDir: string } };
    expect(tsBuild.compilerOptions).toMatchObject({ rootDir: "src", outDir: "dist" });
    expect(readFileSync(join(ROOT, "bin/proofgate.js"), "utf8")).toContain('from "../dist/cli/main.js"');
  });

  it("leaves the benchmark out of dist/ and the image: it builds on its own, from bench/ to bench/dist/", () => {
    const tsBuild = JSON.parse(readFileSync(join(ROOT, "tsconfig.build.json"), "utf8")) as { include: string[] };
    expect(tsBuild.include).toEqual(["src"]);
    expect(existsSync(join(ROOT, "src/bench"))).toBe(false);
    const benchBuild = JSON.parse(readFileSync(join(ROOT, "bench/tsconfig.build.json"), "utf8")) as { compilerOptions: { rootDir: string; outDir: string } };
    expect(benchBuild.compilerOptions).toMatchObject({ rootDir: ".", outDir: "dist" });
    expect(readFileSync(join(ROOT, ".dockerignore"), "utf8").split(/\r?\n/)).toContain("bench");
  });

  it("ships only the runtime files, owned by root, and runs as an unprivileged user", () => {
    const fromBuild = copies(runtime).filter((c) => c.from === "build").flatMap((c) => c.sources);
    const fromContext = copies(runtime).filter((c) => c.from === undefined).flatMap((c) => c.sources);
    expect(fromBuild.sort()).toEqual(["/app/dist", "/app/node_modules", "/app/package.json"]);
    expect(fromContext.sort()).toEqual(["bin", "examples", "proto"]);
    expect(all(runtime, "WORKDIR")).toEqual(["/app"]);
    expect(copies(runtime).some((c) => c.sources.some((s) => /src|test|\.ts$/.test(s)))).toBe(false);
    const users = all(runtime, "USER");
    expect(users).toEqual(["10001:10001"]);
    expect(all(runtime, "RUN").join(" ")).toMatch(/useradd --system --uid 10001/);
    // USER comes after every COPY and RUN: the app files stay root-owned and read-only to it.
    const ops = runtime?.instructions.map((i) => i.op) ?? [];
    expect(ops.lastIndexOf("USER")).toBeGreaterThan(Math.max(ops.lastIndexOf("COPY"), ops.lastIndexOf("RUN")));
  });

  it("starts the CLI, one image for writer and sidecar", () => {
    expect(all(runtime, "ENTRYPOINT")).toEqual(['["node", "bin/proofgate.js"]']);
    expect(existsSync(join(ROOT, "bin/proofgate.js"))).toBe(true);
    // gRPC reflection reads proto/ next to dist/ (src/transport/grpc.ts: ../../proto).
    expect(readFileSync(join(ROOT, "src/transport/grpc.ts"), "utf8")).toContain('new URL("../../proto", import.meta.url)');
  });

  it("copies only files that exist and that .dockerignore lets through", () => {
    const ignored = readFileSync(join(ROOT, ".dockerignore"), "utf8")
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    const sources = dockerfile.stages.flatMap((s) => copies(s).filter((c) => c.from === undefined).flatMap((c) => c.sources));
    expect(sources).toEqual(expect.arrayContaining(["package.json", "package-lock.json", "src", "bin", "proto", "examples"]));
    for (const source of sources) {
      expect(existsSync(join(ROOT, source)), `${source} exists`).toBe(true);
      const top = source.split("/")[0] ?? source;
      expect(ignored, `${source} is not excluded by .dockerignore`).not.toContain(top);
    }
    // Local state never enters the build context.
    expect(ignored).toEqual(expect.arrayContaining(["node_modules", "dist", ".git", ".tools", "*.db"]));
  });
});
