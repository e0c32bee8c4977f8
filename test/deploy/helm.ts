import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { describeOptions, type OptionSpec } from "../../src/config/options.js";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const CHART = join(ROOT, "deploy/helm/proofgate");
export const SIDECAR_LIBRARY = join(ROOT, "deploy/helm/proofgate-sidecar");
export const STACK = join(ROOT, "deploy/helm/proofgate-stack");
export const APP_CHART = join(ROOT, "deploy/examples/app-chart");

/** helm from PATH, else the project-local one scripts/install-helm.sh installs. */
export function findHelm(): string {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, "helm"))) return join(dir, "helm");
  }
  const local = join(ROOT, ".tools/bin/helm");
  if (existsSync(local)) return local;
  throw new Error("helm not found on PATH or in .tools/bin: run scripts/install-helm.sh");
}

/** Runs helm with its cache, config and data in a private temp dir (no repositories, no network). */
export class Helm {
  readonly bin = findHelm();
  private readonly home = mkdtempSync(join(tmpdir(), "proofgate-helm-"));

  run(args: readonly string[]): string {
    try {
      return execFileSync(this.bin, args, {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          PATH: process.env["PATH"] ?? "",
          HOME: this.home,
          HELM_CACHE_HOME: join(this.home, "cache"),
          HELM_CONFIG_HOME: join(this.home, "config"),
          HELM_DATA_HOME: join(this.home, "data"),
        },
      });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`helm ${args.join(" ")} failed:\n${e.stderr ?? ""}${e.stdout ?? ""}`, { cause: err });
    }
  }

  /** The error output of a helm command that must fail. */
  failure(args: readonly string[]): string {
    try {
      this.run(args);
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error(`helm ${args.join(" ")} succeeded but should have failed`);
  }

  lint(chart: string, extra: readonly string[] = []): string {
    return this.run(["lint", "--strict", chart, ...extra]);
  }

  /** `helm template` parsed into manifests. `values` become a values file; `set` are --set pairs. */
  template(chart: string, opts: { release?: string; namespace?: string; values?: unknown; valuesFiles?: readonly string[]; set?: readonly string[] } = {}): Manifest[] {
    const args = ["template", opts.release ?? "rel", chart, "--namespace", opts.namespace ?? "shop"];
    if (opts.values !== undefined) {
      const file = join(this.home, `values-${Math.random().toString(36).slice(2)}.yaml`);
      writeFileSync(file, JSON.stringify(opts.values));
      args.push("-f", file);
    }
    for (const f of opts.valuesFiles ?? []) args.push("-f", f);
    for (const s of opts.set ?? []) args.push("--set", s);
    return parseManifests(this.run(args));
  }

  /**
   * A copy of deploy/ in a temp dir (relative file:// dependencies intact) with `chartPath`'s
   * dependencies built; returns the copied chart's path. The repository stays untouched.
   */
  withDependencies(chartPath: string, edit?: (chartYaml: string) => string): string {
    const copy = join(this.home, `deploy-${Math.random().toString(36).slice(2)}`);
    cpSync(join(ROOT, "deploy"), join(copy, "deploy"), { recursive: true });
    const chart = join(copy, chartPath.slice(ROOT.length));
    if (edit) {
      const file = join(chart, "Chart.yaml");
      writeFileSync(file, edit(readFileSync(file, "utf8")));
    }
    this.run(["dependency", "build", chart]);
    return chart;
  }

  dispose(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

export interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  readonly [key: string]: unknown;
}

export function parseManifests(text: string): Manifest[] {
  const out: Manifest[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML from helm: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value = doc.toJS() as Manifest | null;
    if (value) out.push(value);
  }
  return out;
}

export function kinds(manifests: readonly Manifest[]): string[] {
  return manifests.map((m) => m.kind).sort();
}

/**
 * The one manifest of `kind` (and `name`, when given), typed as the caller's view of that kind;
 * fails when there is not exactly one.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- a typed view of parsed YAML, checked by the assertions that use it
export function one<T = Manifest>(manifests: readonly Manifest[], kind: string, name?: string): T {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length}: ${manifests.map((m) => `${m.kind}/${m.metadata.name}`).join(", ")}`);
  return found[0] as T;
}

// Kubernetes shapes, only as deep as the tests look.
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
export interface HttpProbe {
  httpGet?: { path: string; port: string | number };
}
export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  restartPolicy?: string;
  ports?: { name: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  livenessProbe?: HttpProbe;
  readinessProbe?: HttpProbe;
  startupProbe?: HttpProbe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown>;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
export interface Volume {
  name: string;
  emptyDir?: { medium?: string; sizeLimit?: string };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
  configMap?: { name: string };
  persistentVolumeClaim?: { claimName: string };
}
export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  securityContext?: Record<string, unknown>;
  enableServiceLinks?: boolean;
  automountServiceAccountToken?: boolean;
}
export interface Workload extends Manifest {
  spec: {
    replicas?: number;
    serviceName?: string;
    template: { metadata: { annotations?: Record<string, string>; labels?: Record<string, string> }; spec: PodSpec };
    volumeClaimTemplates?: { metadata: { name: string }; spec: { resources: { requests: { storage: string } } } }[];
  };
}

export function container(pod: PodSpec, name: string): Container {
  const c = [...pod.containers, ...(pod.initContainers ?? [])].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} in ${pod.containers.map((x) => x.name).join(", ")}`);
  return c;
}

/** The port number a probe or reference names, resolved against the container's ports. */
export function portNumber(c: Container, port: string | number | undefined): number {
  if (typeof port === "number") return port;
  const p = c.ports?.find((x) => x.name === port);
  if (!p) throw new Error(`container ${c.name} has no port named ${String(port)}`);
  return p.containerPort;
}

export function envValue(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.value;
}

/**
 * The PROOFGATE_* variable of every option in a service's option spec, as the service's own
 * `--help` text (describeOptions) names them.
 */
export function optionVariables(spec: OptionSpec): Set<string> {
  return new Set([...describeOptions(spec).matchAll(/ \/ (PROOFGATE_[A-Z0-9_]+)/g)].map((m) => m[1] ?? ""));
}

/** The PROOFGATE_* variable of option `key` (camelCase), the services' naming rule. */
export function variableOf(key: string): string {
  return `PROOFGATE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}
