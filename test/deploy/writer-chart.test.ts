import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { writerOptionSpec } from "../../src/writer/options.js";
import {
  CHART,
  Helm,
  STACK,
  container,
  envValue,
  kinds,
  one,
  optionVariables,
  portNumber,
  type Container,
  type Manifest,
  variableOf,
  type Workload,
} from "./helm.js";

let helm: Helm;
beforeAll(() => {
  helm = new Helm();
});
afterAll(() => helm.dispose());

interface ConfigMap extends Manifest {
  data: Record<string, string>;
}
interface Service extends Manifest {
  spec: { clusterIP?: string; publishNotReadyAddresses?: boolean; selector: Record<string, string>; ports: { name: string; port: number; targetPort: string | number }[] };
}

function writer(manifests: Manifest[]): { sts: Workload; c: Container; config: ConfigMap } {
  const sts = one<Workload>(manifests, "StatefulSet");
  const c = container(sts.spec.template.spec, "writer");
  const name = c.envFrom?.[0]?.configMapRef?.name;
  return { sts, c, config: one<ConfigMap>(manifests, "ConfigMap", name) };
}

/** Every PROOFGATE_* variable the writer container receives (ConfigMap and env). */
function writerVariables(manifests: Manifest[]): string[] {
  const { c, config } = writer(manifests);
  return [...Object.keys(config.data), ...(c.env ?? []).map((e) => e.name)].filter((n) => n.startsWith("PROOFGATE_"));
}

describe("proofgate chart: default values", () => {
  let manifests: Manifest[];
  beforeAll(() => {
    manifests = helm.template(CHART, { release: "pg" });
  });

  it("lints cleanly (strict) without fetching anything", () => {
    expect(helm.lint(CHART)).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("renders the writer's objects and nothing from NATS", () => {
    expect(kinds(manifests)).toEqual(["ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "StatefulSet"]);
  });

  it("runs a leader and a standby, each with its ledger on a persistent volume claim, spread over nodes", () => {
    const { sts, c, config } = writer(manifests);
    expect(sts.spec.replicas).toBe(2);
    const anti = (sts.spec.template.spec as { affinity?: { podAntiAffinity?: { preferredDuringSchedulingIgnoredDuringExecution?: { podAffinityTerm: { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } } }[] } } }).affinity?.podAntiAffinity;
    const term = anti?.preferredDuringSchedulingIgnoredDuringExecution?.[0]?.podAffinityTerm;
    expect(term?.topologyKey).toBe("kubernetes.io/hostname");
    expect(Object.keys(term?.labelSelector.matchLabels ?? {}).length).toBeGreaterThan(0);
    expect(sts.spec.template.metadata.labels).toMatchObject(term?.labelSelector.matchLabels ?? { missing: "selector" });
    expect(one<{ spec: { maxUnavailable: number } }>(manifests, "PodDisruptionBudget", "pg-proofgate").spec.maxUnavailable).toBe(1);
    expect(config.data["PROOFGATE_LEASE_TTL"]).toBe("2s");
    expect(c.args).toEqual(["writer"]);
    const claim = sts.spec.volumeClaimTemplates?.[0];
    expect(claim?.metadata.name).toBe("ledger");
    expect(claim?.spec.resources.requests.storage).toBe("10Gi");
    const mount = c.volumeMounts?.find((m) => m.name === "ledger");
    expect(mount?.mountPath).toBe("/var/lib/proofgate");
    expect(config.data["PROOFGATE_LEDGER"]).toBe("/var/lib/proofgate/ledger.db");
    expect(sts.spec.serviceName).toBe(one<Service>(manifests, "Service", "pg-proofgate-headless").metadata.name);
  });

  it("listens on all interfaces inside the pod and probes the real health endpoints on the HTTP port", () => {
    const { c, config } = writer(manifests);
    expect(config.data["PROOFGATE_GRPC_LISTEN"]).toBe("0.0.0.0:50051");
    expect(config.data["PROOFGATE_HTTP_LISTEN"]).toBe("0.0.0.0:9090");
    expect(c.livenessProbe?.httpGet?.path).toBe("/healthz");
    expect(c.readinessProbe?.httpGet?.path).toBe("/readyz");
    expect(c.startupProbe?.httpGet?.path).toBe("/healthz");
    for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) expect(portNumber(c, probe?.httpGet?.port)).toBe(9090);
    expect(portNumber(c, "grpc")).toBe(50051);
  });

  it("runs as non-root with a read-only root filesystem and no service-account token or service links", () => {
    const { sts, c } = writer(manifests);
    const pod = sts.spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001 });
    expect(c.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.enableServiceLinks).toBe(false);
  });

  it("rolls the pod when the configuration changes (checksum annotation of the ConfigMap)", () => {
    const sum = (m: Manifest[]): string | undefined => writer(m).sts.spec.template.metadata.annotations?.["checksum/config"];
    const before = sum(manifests);
    expect(before).toMatch(/^[0-9a-f]{64}$/);
    expect(sum(helm.template(CHART, { release: "pg" }))).toBe(before);
    expect(sum(helm.template(CHART, { release: "pg", set: ["writer.logLevel=debug"] }))).not.toBe(before);
  });

  it("exposes gRPC and HTTP through a Service that keeps routing while the writer is not ready", () => {
    const svc = one<Service>(manifests, "Service", "pg-proofgate");
    expect(svc.spec.ports.map((p) => [p.name, p.port, p.targetPort])).toEqual([
      ["grpc", 50051, "grpc"],
      ["http", 9090, "http"],
    ]);
    expect(svc.spec.publishNotReadyAddresses).toBe(true);
    const { sts } = writer(manifests);
    expect(sts.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    const headless = one<Service>(manifests, "Service", "pg-proofgate-headless");
    expect(headless.spec.clusterIP).toBe("None");
    expect(headless.spec.ports.map((p) => p.name)).not.toContain("http");
  });

  it("keeps the writer's own defaults for its tuning options", () => {
    const { config } = writer(manifests);
    const declared = optionVariables(writerOptionSpec);
    for (const key of ["heartbeatInterval", "publishTimeout", "outboxRetention", "leaseTtl", "logLevel"] as const) {
      const name = variableOf(key);
      expect(declared).toContain(name);
      const option = writerOptionSpec[key];
      expect(option.parse(config.data[name] ?? "", name), name).toEqual(option.default);
    }
  });

  it("passes only variables the writer declares as options (PROOFGATE_* from its option spec)", () => {
    const declared = optionVariables(writerOptionSpec);
    expect(declared.size).toBeGreaterThan(5);
    const used = writerVariables(manifests);
    expect(used.length).toBeGreaterThan(5);
    for (const name of used) expect(declared, `${name} is not a writer option`).toContain(name);
  });
});

describe("proofgate chart: external NATS cluster with credentials from a Secret", () => {
  let manifests: Manifest[];
  beforeAll(() => {
    manifests = helm.template(CHART, {
      release: "proofgate",
      values: {
        nats: {
          url: "tls://nats-0.nats.example:4222,tls://nats-1.nats.example:4222",
          streamReplicas: 3,
          credentials: { existingSecret: "proofgate-writer-nats", key: "writer.creds" },
        },
        writer: {
          stripe: {
            webhookSecret: { existingSecret: "stripe", key: "whsec" },
            apiKey: { existingSecret: "stripe", key: "restricted-key" },
            reconcileInterval: "30m",
            priceMap: { plans: { premium: ["price_1"] } },
          },
        },
        serviceMonitor: { enabled: true, labels: { release: "prom" } },
        podMonitor: { enabled: true, labels: { release: "prom" } },
      },
    });
  });

  it("lints with these values", () => {
    expect(helm.lint(CHART, ["--set", "nats.credentials.existingSecret=proofgate-writer-nats", "--set", "nats.streamReplicas=3"])).toMatch(/0 chart\(s\) failed/);
  });

  it("mounts the .creds Secret read-only and points PROOFGATE_NATS_CREDS at the file", () => {
    const { sts, c, config } = writer(manifests);
    const volume = sts.spec.template.spec.volumes?.find((v) => v.secret?.secretName === "proofgate-writer-nats");
    expect(volume?.secret?.items).toEqual([{ key: "writer.creds", path: "writer.creds" }]);
    const mount = c.volumeMounts?.find((m) => m.name === volume?.name);
    expect(mount?.readOnly).toBe(true);
    expect(config.data["PROOFGATE_NATS_CREDS"]).toBe(`${mount?.mountPath ?? "?"}/writer.creds`);
    expect(config.data["PROOFGATE_NATS_URL"]).toBe("tls://nats-0.nats.example:4222,tls://nats-1.nats.example:4222");
    expect(config.data["PROOFGATE_STREAM_REPLICAS"]).toBe("3");
    // The release name contains the chart name: objects are called just "proofgate".
    expect(sts.metadata.name).toBe("proofgate");
  });

  it("takes the Stripe webhook secret from its Secret and the price map inline", () => {
    const { c, config } = writer(manifests);
    expect(c.env?.find((e) => e.name === "PROOFGATE_STRIPE_WEBHOOK_SECRET")?.valueFrom?.secretKeyRef).toEqual({ name: "stripe", key: "whsec" });
    expect(JSON.parse(config.data["PROOFGATE_STRIPE_PRICE_MAP"] ?? "null")).toEqual({ plans: { premium: ["price_1"] } });
    // The read-only API key comes from the Secret too; scheduled reconciliation is configured with it.
    expect(c.env?.find((e) => e.name === "PROOFGATE_STRIPE_API_KEY")?.valueFrom?.secretKeyRef).toEqual({ name: "stripe", key: "restricted-key" });
    expect(config.data["PROOFGATE_STRIPE_API_KEY"]).toBeUndefined();
    expect(config.data["PROOFGATE_STRIPE_RECONCILE_INTERVAL"]).toBe("30m");
    const declared = optionVariables(writerOptionSpec);
    for (const name of writerVariables(manifests)) expect(declared, `${name} is not a writer option`).toContain(name);
  });

  it("adds a ServiceMonitor scraping /metrics on the HTTP port", () => {
    const sm = one<Manifest & { spec: { endpoints: { port: string; path: string }[] } }>(manifests, "ServiceMonitor");
    expect(sm.metadata.labels?.["release"]).toBe("prom");
    expect(sm.spec.endpoints).toMatchObject([{ port: "http", path: "/metrics" }]);
  });

  it("adds a PodMonitor scraping every sidecar: the pods the sidecar library labels, on its HTTP port", () => {
    type PodMonitor = Manifest & {
      spec: { selector: { matchLabels: Record<string, string> }; namespaceSelector: { any?: boolean }; podMetricsEndpoints: { port: string; path: string }[] };
    };
    const pm = one<PodMonitor>(manifests, "PodMonitor");
    expect(pm.metadata.labels?.["release"]).toBe("prom");
    expect(pm.spec.namespaceSelector).toEqual({ any: true });
    expect(pm.spec.podMetricsEndpoints).toMatchObject([{ port: "proofgate-http", path: "/metrics" }]);
    // The label the sidecar library puts on application pods (test/deploy/sidecar-injection.test.ts).
    expect(pm.spec.selector.matchLabels).toEqual({ "proofgate.io/sidecar": "true" });
  });

  it("does not warn about missing credentials in NOTES", () => {
    const notes = helm.run(["install", "--dry-run=client", "proofgate", CHART, "--set", "nats.credentials.existingSecret=x"]);
    expect(notes).toContain("proofgate.default.svc:50051");
    expect(notes).not.toContain("without credentials");
    expect(helm.run(["install", "--dry-run=client", "proofgate", CHART])).toContain("without credentials");
  });
});

describe("proofgate chart: values are checked", () => {
  it("rejects unknown keys, bad durations and more than one NATS authentication method", () => {
    expect(helm.failure(["template", "x", CHART, "--set", "writer.replicaz=2"])).toMatch(/additional properties 'replicaz' not allowed/);
    expect(helm.failure(["template", "x", CHART, "--set", "writer.podAntiAffinity=maybe"])).toMatch(/podAntiAffinity/);
    expect(helm.failure(["template", "x", CHART, "--set", "writer.heartbeatInterval=soon"])).toMatch(/heartbeatInterval/);
    expect(helm.failure(["template", "x", CHART, "--set", "nats.streamReplicas=7"])).toMatch(/streamReplicas/);
    expect(
      helm.failure(["template", "x", CHART, "--set", "nats.credentials.existingSecret=a", "--set", "nats.userPassword.existingSecret=b"]),
    ).toMatch(/set only one of/);
  });

  it("uses an existing claim, or an emptyDir when persistence is off", () => {
    const existing = writer(helm.template(CHART, { set: ["writer.persistence.existingClaim=ledger-pvc"] })).sts;
    expect(existing.spec.volumeClaimTemplates).toBeUndefined();
    expect(existing.spec.template.spec.volumes?.find((v) => v.name === "ledger")?.persistentVolumeClaim?.claimName).toBe("ledger-pvc");
    const off = writer(helm.template(CHART, { set: ["writer.persistence.enabled=false"] })).sts;
    expect(off.spec.volumeClaimTemplates).toBeUndefined();
    expect(off.spec.template.spec.volumes?.find((v) => v.name === "ledger")?.emptyDir).toBeDefined();
  });
});

describe("proofgate-stack: the writer half of the NATS-cluster configuration", () => {
  // The stack's NATS dependency cannot be downloaded here: render the stack with only its
  // proofgate dependency (file://), which checks its proofgate values against the chart's schema.
  let manifests: Manifest[];
  beforeAll(() => {
    const chart = helm.withDependencies(STACK, (text) => {
      const doc = parseYaml(text) as { dependencies: { name: string }[] };
      doc.dependencies = doc.dependencies.filter((d) => d.name !== "nats");
      return JSON.stringify(doc);
    });
    manifests = helm.template(chart, { release: "proofgate", set: ["nats.enabled=false"] });
  });

  it("declares the official NATS chart as a condition-gated dependency", () => {
    const chart = parseYaml(readFileSync(join(STACK, "Chart.yaml"), "utf8")) as { dependencies: { name: string; repository: string; condition?: string }[] };
    expect(chart.dependencies.find((d) => d.name === "nats")).toMatchObject({ repository: "https://nats-io.github.io/k8s/helm/charts/", condition: "nats.enabled" });
    const values = parseYaml(readFileSync(join(STACK, "values.yaml"), "utf8")) as { nats: { config: { cluster: { replicas: number }; jetstream: { enabled: boolean } } } };
    expect(values.nats.config.cluster.replicas).toBe(3);
    expect(values.nats.config.jetstream.enabled).toBe(true);
  });

  it("uses R3 streams, the stack's NATS service and the writer's password from the users Secret", () => {
    const { c, config } = writer(manifests);
    expect(config.data["PROOFGATE_STREAM_REPLICAS"]).toBe("3");
    expect(config.data["PROOFGATE_NATS_URL"]).toBe("nats://proofgate-nats:4222");
    expect(c.env?.find((e) => e.name === "PROOFGATE_NATS_USER")?.valueFrom?.secretKeyRef).toEqual({ name: "proofgate-nats-users", key: "writer-user" });
    expect(c.env?.find((e) => e.name === "PROOFGATE_NATS_PASSWORD")?.valueFrom?.secretKeyRef).toEqual({ name: "proofgate-nats-users", key: "writer-password" });
    expect(envValue(c, "PROOFGATE_NATS_CREDS")).toBeUndefined();
  });

  it("renders the NATS users ConfigMap the NATS servers mount, with sidecars as the no-auth user", () => {
    const auth = one<ConfigMap>(manifests, "ConfigMap", "proofgate-nats-auth");
    const conf = auth.data["accounts.conf"] ?? "";
    expect(conf).toContain('user: "proofgate-writer"');
    expect(conf).toContain('no_auth_user: "proofgate-sidecar"');
    const values = parseYaml(readFileSync(join(STACK, "values.yaml"), "utf8")) as {
      nats: { config: { merge: Record<string, string> }; podTemplate: { patch: { value: { configMap?: { name: string } } }[] } };
    };
    expect(values.nats.config.merge["$include"]).toBe("../proofgate-auth/accounts.conf");
    expect(values.nats.podTemplate.patch[0]?.value.configMap?.name).toBe(auth.metadata.name);
  });
});
