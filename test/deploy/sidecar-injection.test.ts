import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { SIDECAR_NODE_OPTIONS, sidecarOptionSpec } from "../../src/sidecar/options.js";
import {
  APP_CHART,
  CHART,
  Helm,
  SIDECAR_LIBRARY,
  container,
  envValue,
  kinds,
  one,
  optionVariables,
  portNumber,
  variableOf,
  type Container,
  type Manifest,
  type PodSpec,
  type Workload,
} from "./helm.js";

let helm: Helm;
let appChart: string;
beforeAll(() => {
  helm = new Helm();
  // `helm dependency build` of the example in a temp copy: the file:// library dependency only.
  appChart = helm.withDependencies(APP_CHART);
});
afterAll(() => helm.dispose());

function pod(manifests: Manifest[]): PodSpec {
  return one<Workload>(manifests, "Deployment").spec.template.spec;
}

function checkSidecarBasics(p: PodSpec): Container {
  const c = container(p, "proofgate-sidecar");
  expect(c.image).toBe("ghcr.io/proofgate/proofgate:0.1.0");
  // Readiness on the sidecar's own /readyz, liveness on /healthz, both on its HTTP port.
  expect(c.readinessProbe?.httpGet?.path).toBe("/readyz");
  expect(c.livenessProbe?.httpGet?.path).toBe("/healthz");
  const httpPort = portNumber(c, c.readinessProbe?.httpGet?.port);
  expect(httpPort).toBe(9091);
  expect(portNumber(c, c.livenessProbe?.httpGet?.port)).toBe(httpPort);
  expect(envValue(c, "PROOFGATE_HTTP_LISTEN")).toBe(`0.0.0.0:${httpPort}`);
  // Sized from the design targets until the benchmark replaces them.
  expect(c.resources).toEqual({ requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "500m", memory: "384Mi" } });
  expect(c.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
  // The replica on its own volume (emptyDir by default).
  const replicaMount = c.volumeMounts?.find((m) => m.name === "proofgate-replica");
  expect(envValue(c, "PROOFGATE_REPLICA")).toBe(`${replicaMount?.mountPath ?? "?"}/replica.db`);
  expect(p.volumes?.find((v) => v.name === "proofgate-replica")?.emptyDir).toEqual({ sizeLimit: "2Gi" });
  // NATS credentials from the Secret named in values.yaml.
  const creds = p.volumes?.find((v) => v.name === "proofgate-nats-creds");
  expect(creds?.secret?.secretName).toBe("proofgate-sidecar-nats");
  const credsMount = c.volumeMounts?.find((m) => m.name === "proofgate-nats-creds");
  expect(credsMount?.readOnly).toBe(true);
  expect(envValue(c, "PROOFGATE_NATS_CREDS")).toBe(`${credsMount?.mountPath ?? "?"}/nats.creds`);
  // Only variables the sidecar declares as options.
  const declared = optionVariables(sidecarOptionSpec);
  const used = (c.env ?? []).map((e) => e.name).filter((n) => n.startsWith("PROOFGATE_"));
  expect(used.length).toBeGreaterThan(5);
  for (const name of used) expect(declared, `${name} is not a sidecar option`).toContain(name);
  expect(p.enableServiceLinks).toBe(false);
  // Node's flags as the benchmark measures the sidecar.
  expect(envValue(c, "NODE_OPTIONS")).toBe(SIDECAR_NODE_OPTIONS);
  return c;
}

/** The sidecar's own defaults for its tuning options. */
function checkSidecarDefaults(c: Container): void {
  for (const key of ["mode", "minRevisionWait", "decisionLogSample", "logLevel"] as const) {
    const name = variableOf(key);
    const option = sidecarOptionSpec[key];
    expect(option.parse(envValue(c, name) ?? "", name), name).toEqual(option.default);
  }
}

describe("example app chart with the sidecar over loopback TCP (default values)", () => {
  let manifests: Manifest[];
  beforeAll(() => {
    manifests = helm.template(appChart, { release: "shop" });
  });

  it("lints, and the library chart lints on its own", () => {
    expect(helm.lint(appChart)).toMatch(/0 chart\(s\) failed/);
    expect(helm.lint(SIDECAR_LIBRARY)).toMatch(/0 chart\(s\) failed/);
  });

  it("renders the application's Deployment and Service only (no writer)", () => {
    expect(kinds(manifests)).toEqual(["Deployment", "Service"]);
  });

  it("labels the pod for the writer chart's PodMonitor, whose port the sidecar names", () => {
    const d = one<Workload & { spec: { template: { metadata: { labels?: Record<string, string> } } } }>(manifests, "Deployment");
    expect(d.spec.template.metadata.labels?.["proofgate.io/sidecar"]).toBe("true");
    expect(container(pod(manifests), "proofgate-sidecar").ports?.map((p) => p.name)).toContain("proofgate-http");
  });

  it("adds the sidecar container next to the app, gRPC on 127.0.0.1 only", () => {
    const p = pod(manifests);
    expect(p.containers.map((c) => c.name)).toEqual(["app", "proofgate-sidecar"]);
    const c = checkSidecarBasics(p);
    checkSidecarDefaults(c);
    expect(c.args).toEqual(["sidecar"]);
    expect(envValue(c, "PROOFGATE_GRPC_LISTEN")).toBe("127.0.0.1:50061");
    expect(envValue(c, "PROOFGATE_GRPC_SOCKET")).toBe("");
    expect(envValue(c, "PROOFGATE_NATS_URL")).toBe("nats://nats.proofgate.svc.cluster.local:4222");
    // No container port for gRPC: it is not reachable from outside the pod.
    expect(c.ports?.map((x) => x.containerPort)).toEqual([9091]);
    expect(p.volumes?.find((v) => v.name === "proofgate-socket")).toBeUndefined();
    const app = container(p, "app");
    expect(envValue(app, "PROOFGATE_SIDECAR_ADDRESS")).toBe("127.0.0.1:50061");
    expect(app.volumeMounts).toBeUndefined();
  });
});

describe("example app chart with the sidecar on a unix socket", () => {
  let manifests: Manifest[];
  beforeAll(() => {
    manifests = helm.template(appChart, { release: "shop", valuesFiles: [join(appChart, "values-unix-socket.yaml")] });
  });

  it("lints with the unix-socket values", () => {
    expect(helm.lint(appChart, ["-f", join(appChart, "values-unix-socket.yaml")])).toMatch(/0 chart\(s\) failed/);
  });

  it("shares the socket directory between the sidecar and the app and disables TCP", () => {
    const p = pod(manifests);
    const c = checkSidecarBasics(p);
    const socketVolume = p.volumes?.find((v) => v.name === "proofgate-socket");
    expect(socketVolume?.emptyDir).toMatchObject({ medium: "Memory" });
    const sidecarMount = c.volumeMounts?.find((m) => m.name === "proofgate-socket");
    const app = container(p, "app");
    const appMount = app.volumeMounts?.find((m) => m.name === "proofgate-socket");
    expect(sidecarMount?.mountPath).toBe("/var/run/proofgate");
    expect(appMount?.mountPath).toBe(sidecarMount?.mountPath);
    expect(envValue(c, "PROOFGATE_GRPC_SOCKET")).toBe("/var/run/proofgate/sidecar.sock");
    expect(envValue(c, "PROOFGATE_GRPC_LISTEN")).toBe("");
    expect(envValue(app, "PROOFGATE_SIDECAR_ADDRESS")).toBe("unix:/var/run/proofgate/sidecar.sock");
  });

  it("runs the sidecar with a umask that lets the pod's fsGroup connect", () => {
    const p = pod(manifests);
    const c = container(p, "proofgate-sidecar");
    expect(c.command).toEqual(["/bin/sh", "-c", "umask 0007 && exec node bin/proofgate.js sidecar"]);
    expect(p.securityContext?.["fsGroup"]).toBe(10001);
  });
});

describe("sidecar values", () => {
  it("accepts another replica volume, both transports and a native sidecar", () => {
    const p = pod(
      helm.template(appChart, {
        values: {
          proofgateSidecar: {
            transport: "both",
            nativeSidecar: true,
            replica: { volume: { persistentVolumeClaim: { claimName: "replica" } } },
            resources: { limits: { memory: "384Mi" } },
            nats: { credentials: { existingSecret: "" } },
          },
        },
      }),
    );
    const c = container(p, "proofgate-sidecar");
    expect(c.restartPolicy).toBe("Always");
    expect(p.initContainers?.map((x) => x.name)).toEqual(["proofgate-sidecar"]);
    expect(p.containers.map((x) => x.name)).toEqual(["app"]);
    expect(envValue(c, "PROOFGATE_GRPC_LISTEN")).toBe("127.0.0.1:50061");
    expect(envValue(c, "PROOFGATE_GRPC_SOCKET")).toBe("/var/run/proofgate/sidecar.sock");
    // The whole volume map is replaced, not merged with the emptyDir default.
    expect(p.volumes?.find((v) => v.name === "proofgate-replica")).toEqual({ name: "proofgate-replica", persistentVolumeClaim: { claimName: "replica" } });
    expect(c.resources).toEqual({ requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "500m", memory: "384Mi" } });
    expect(envValue(c, "PROOFGATE_NATS_CREDS")).toBeUndefined();
    expect(p.volumes?.find((v) => v.name === "proofgate-nats-creds")).toBeUndefined();
  });

  it("passes a NATS user and password, or a token, from existing Secrets", () => {
    const render = (nats: object): Container =>
      container(pod(helm.template(appChart, { values: { proofgateSidecar: { nats: { credentials: { existingSecret: "" }, ...nats } } } })), "proofgate-sidecar");
    const secretRef = (c: Container, name: string): unknown => c.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef;
    const withPassword = render({ userPassword: { existingSecret: "sidecar-nats" } });
    expect(secretRef(withPassword, "PROOFGATE_NATS_USER")).toEqual({ name: "sidecar-nats", key: "user" });
    expect(secretRef(withPassword, "PROOFGATE_NATS_PASSWORD")).toEqual({ name: "sidecar-nats", key: "password" });
    expect(envValue(withPassword, "PROOFGATE_NATS_CREDS")).toBeUndefined();
    const withToken = render({ token: { existingSecret: "sidecar-nats-token", key: "t" } });
    expect(secretRef(withToken, "PROOFGATE_NATS_TOKEN")).toEqual({ name: "sidecar-nats-token", key: "t" });
    expect(secretRef(withToken, "PROOFGATE_NATS_USER")).toBeUndefined();
  });

  it("shares the replica with the app for the client's local mode (replica.shareWithApp)", () => {
    const p = pod(helm.template(appChart, { values: { proofgateSidecar: { replica: { shareWithApp: true } } } }));
    const c = container(p, "proofgate-sidecar");
    const app = container(p, "app");
    const sidecarMount = c.volumeMounts?.find((m) => m.name === "proofgate-replica");
    const appMount = app.volumeMounts?.find((m) => m.name === "proofgate-replica");
    expect(appMount?.mountPath).toBe(sidecarMount?.mountPath);
    // Not readOnly: SQLite readers in WAL mode record read marks in the -shm file.
    expect(appMount?.readOnly).toBeUndefined();
    expect(envValue(app, "PROOFGATE_REPLICA")).toBe(envValue(c, "PROOFGATE_REPLICA"));
    expect(envValue(app, "PROOFGATE_SIDECAR_ADDRESS")).toBe("127.0.0.1:50061");
    // Files the pod's fsGroup may read (and -shm write), even over TCP.
    expect(c.command).toEqual(["/bin/sh", "-c", "umask 0007 && exec node bin/proofgate.js sidecar"]);
    expect(p.securityContext?.["fsGroup"]).toBe(10001);
    // With a unix socket too, the app mounts both.
    const both = pod(helm.template(appChart, { values: { proofgateSidecar: { transport: "unix", replica: { shareWithApp: true } } } }));
    expect(container(both, "app").volumeMounts?.map((m) => m.name).sort()).toEqual(["proofgate-replica", "proofgate-socket"]);
  });

  it("rejects an unknown transport", () => {
    expect(helm.failure(["template", "x", appChart, "--set", "proofgateSidecar.transport=udp"])).toMatch(/transport must be tcp, unix or both/);
  });

  it("defaults the image tag to the same appVersion as the writer chart", () => {
    const lib = parseYaml(readFileSync(join(SIDECAR_LIBRARY, "Chart.yaml"), "utf8")) as { appVersion: string; type: string };
    const writer = parseYaml(readFileSync(join(CHART, "Chart.yaml"), "utf8")) as { appVersion: string };
    expect(lib.type).toBe("library");
    expect(lib.appVersion).toBe(writer.appVersion);
    const tpl = readFileSync(join(SIDECAR_LIBRARY, "templates/_sidecar.tpl"), "utf8");
    expect(tpl).toContain(`{{- define "proofgate.sidecar.appVersion" -}}${lib.appVersion}{{- end }}`);
  });
});
