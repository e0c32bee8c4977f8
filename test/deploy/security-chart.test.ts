import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHART, Helm, one, type Manifest } from "./helm.js";

let helm: Helm;
beforeAll(() => {
  helm = new Helm();
});
afterAll(() => helm.dispose());

interface Sts {
  spec: {
    template: {
      spec: {
        containers: { env?: { name: string; value?: string }[]; volumeMounts: { name: string; mountPath: string }[]; readinessProbe: { httpGet: { scheme?: string } } }[];
        volumes: { name: string; secret?: { secretName: string } }[];
      };
    };
  };
}
interface NetworkPolicy {
  spec: { podSelector: { matchLabels: Record<string, string> }; ingress: { from: { podSelector?: { matchLabels: Record<string, string> } }[]; ports?: { port: string }[] }[] };
}
interface Rule {
  spec: { groups: { rules: { alert: string; expr: string }[] }[] };
}

const SECURE = ["auth.existingSecret=pg-auth", "tls.existingSecret=pg-tls", "tls.clientAuth=true", "prometheusRule.enabled=true"];

describe("the writer chart's security objects", () => {
  let manifests: Manifest[];
  beforeAll(() => {
    manifests = helm.template(CHART, { release: "pg", set: SECURE });
  });

  it("passes helm lint --strict with auth, TLS, mTLS and the PrometheusRule on", () => {
    expect(helm.lint(CHART, SECURE.flatMap((s) => ["--set", s]))).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("reads the principals and the TLS pair from existing Secrets, mounted as directories", () => {
    const c = one<Sts>(manifests, "StatefulSet").spec.template.spec;
    const env = Object.fromEntries((c.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      PROOFGATE_AUTH_FILE: "/etc/proofgate/auth/auth.yaml",
      PROOFGATE_TLS_CERT: "/etc/proofgate/tls/tls.crt",
      PROOFGATE_TLS_KEY: "/etc/proofgate/tls/tls.key",
      PROOFGATE_TLS_CLIENT_CA: "/etc/proofgate/tls/ca.crt",
    });
    expect(c.volumes.find((v) => v.name === "auth")?.secret?.secretName).toBe("pg-auth");
    expect(c.volumes.find((v) => v.name === "tls")?.secret?.secretName).toBe("pg-tls");
    expect(c.containers[0]?.volumeMounts.map((m) => m.mountPath)).toEqual(expect.arrayContaining(["/etc/proofgate/auth", "/etc/proofgate/tls"]));
    expect(c.containers[0]?.readinessProbe.httpGet.scheme).toBe("HTTPS");
  });

  it("renders a NetworkPolicy admitting only labelled client pods and NATS", () => {
    const np = one<NetworkPolicy>(manifests, "NetworkPolicy").spec;
    expect(np.podSelector.matchLabels).toMatchObject({ "app.kubernetes.io/name": "proofgate" });
    expect(np.ingress.map((r) => r.from[0]?.podSelector?.matchLabels)).toEqual([{ "proofgate.io/writer-client": "true" }, { "app.kubernetes.io/name": "nats" }]);
    expect(np.ingress[0]?.ports?.map((p) => p.port)).toEqual(["grpc", "http"]);
  });

  it("renders a PrometheusRule with the platform and anomaly alerts", () => {
    const rules = one<Rule>(manifests, "PrometheusRule").spec.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual([
      "ProofgateWriterDown",
      "ProofgateOutboxGrowing",
      "ProofgateSidecarsStale",
      "ProofgateDeadLetters",
      "ProofgateAuthenticationFailures",
      "ProofgateUnusualOverrides",
      "ProofgateUnusualErasures",
      "ProofgateUnusualCatalogChanges",
    ]);
    expect(rules.find((r) => r.alert === "ProofgateAuthenticationFailures")?.expr).toContain("proofgate_writer_auth_denied_total");
    expect(rules.find((r) => r.alert === "ProofgateUnusualErasures")?.expr).toContain('method="AdminService.EraseCustomer"');
  });

  it("without TLS the probes stay plain HTTP and no TLS variables appear", () => {
    const c = one<Sts>(helm.template(CHART, { release: "pg", set: ["auth.existingSecret=pg-auth"] }), "StatefulSet").spec.template.spec.containers[0];
    expect(c?.readinessProbe.httpGet.scheme).toBeUndefined();
    expect(c?.env?.map((e) => e.name)).not.toContain("PROOFGATE_TLS_CERT");
  });
});
