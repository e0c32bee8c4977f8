import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { sidecarOptionSpec } from "../../src/sidecar/options.js";
import { parseRulesText } from "../../src/sidecar/extauthz/rules.js";
import { createIdentity } from "../../src/sidecar/extauthz/identity.js";
import { APP_CHART, Helm, ROOT, container, envValue, one, optionVariables, type Manifest, type PodSpec, type Workload } from "./helm.js";

let helm: Helm;
let appChart: string;
beforeAll(() => {
  helm = new Helm();
  appChart = helm.withDependencies(APP_CHART);
});
afterAll(() => helm.dispose());

const pod = (manifests: Manifest[]): PodSpec => one<Workload>(manifests, "Deployment").spec.template.spec;

describe("sidecar chart values for ext_authz", () => {
  it("lints with values-ext-authz.yaml", () => {
    expect(helm.lint(appChart, ["-f", join(appChart, "values-ext-authz.yaml")])).toMatch(/0 chart\(s\) failed/);
  });

  it("mounts the rules ConfigMap as a directory (so updates reach the sidecar) and listens on loopback", () => {
    const p = pod(helm.template(appChart, { release: "shop", valuesFiles: [join(appChart, "values-ext-authz.yaml")] }));
    const c = container(p, "proofgate-sidecar");
    const mount = c.volumeMounts?.find((m) => m.name === "proofgate-ext-authz");
    expect(mount).toEqual({ name: "proofgate-ext-authz", mountPath: "/etc/proofgate/ext-authz", readOnly: true });
    expect(mount).not.toHaveProperty("subPath");
    expect(p.volumes?.find((v) => v.name === "proofgate-ext-authz")?.configMap).toEqual({ name: "billing-aware-app-ext-authz" });
    expect(envValue(c, "PROOFGATE_EXT_AUTHZ_RULES")).toBe("/etc/proofgate/ext-authz/rules.yaml");
    expect(envValue(c, "PROOFGATE_EXT_AUTHZ_LISTEN")).toBe("127.0.0.1:50062");
    // Both are options the sidecar declares.
    const declared = optionVariables(sidecarOptionSpec);
    expect(declared).toContain("PROOFGATE_EXT_AUTHZ_RULES");
    expect(declared).toContain("PROOFGATE_EXT_AUTHZ_LISTEN");
    // The Check port stays loopback-only too: no container port for either.
    expect(c.ports?.map((x) => x.containerPort)).toEqual([9091]);
  });

  it("shares the Check listener with port 0, is off by default, and refuses to enable without a ConfigMap", () => {
    const shared = container(pod(helm.template(appChart, { set: ["proofgateSidecar.extAuthz.enabled=true", "proofgateSidecar.extAuthz.configMap=rules", "proofgateSidecar.extAuthz.port=0"] })), "proofgate-sidecar");
    expect(envValue(shared, "PROOFGATE_EXT_AUTHZ_LISTEN")).toBe("");
    expect(envValue(shared, "PROOFGATE_EXT_AUTHZ_RULES")).toBe("/etc/proofgate/ext-authz/rules.yaml");
    const off = container(pod(helm.template(appChart)), "proofgate-sidecar");
    expect(envValue(off, "PROOFGATE_EXT_AUTHZ_RULES")).toBeUndefined();
    expect(off.volumeMounts?.find((m) => m.name === "proofgate-ext-authz")).toBeUndefined();
    expect(helm.failure(["template", "x", appChart, "--set", "proofgateSidecar.extAuthz.enabled=true"])).toContain("proofgateSidecar.extAuthz.configMap");
  });
});

describe("examples/envoy", () => {
  const dir = join(ROOT, "examples/envoy");

  it("rules.yaml and jwks.json are valid as shipped", () => {
    const config = parseRulesText(readFileSync(join(dir, "rules.yaml"), "utf8"));
    expect(config.rules.map((r) => r.name)).toEqual(["seats", "invite", "assistant", "api"]);
    const identity = config.identity;
    if (identity.kind !== "jwt") throw new Error("the example uses JWT identity");
    const jwks = readFileSync(join(dir, identity.jwksFile), "utf8");
    expect(createIdentity(identity, jwks).scheme).toBe("Bearer");
  });

  it("the Envoy and Istio examples point at the port the chart example listens on", () => {
    const port = /port: (\d+)/.exec(readFileSync(join(APP_CHART, "values-ext-authz.yaml"), "utf8"))?.[1];
    expect(port).toBe("50062");
    const envoy = readFileSync(join(dir, "envoy.yaml"), "utf8");
    expect(envoy).toContain(`port_value: ${port}`);
    expect(envoy).toContain("failure_mode_allow: false");
    expect(envoy).toContain("transport_api_version: V3");
    const istio = parseAllDocuments(readFileSync(join(dir, "istio.yaml"), "utf8")).map((d) => d.toJS() as Manifest & { spec: Record<string, unknown> });
    const entry = istio.find((m) => m.kind === "ServiceEntry");
    expect(entry?.spec["ports"]).toEqual([{ name: "grpc", number: Number(port), protocol: "GRPC" }]);
    const policy = istio.find((m) => m.kind === "AuthorizationPolicy");
    expect(policy?.spec).toMatchObject({ action: "CUSTOM", provider: { name: "proofgate" } });
  });
});
