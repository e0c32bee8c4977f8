import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRegistry } from "../../src/observability/metrics.js";
import { SidecarMetrics } from "../../src/sidecar/metrics.js";
import { createStripeWebhookMetrics } from "../../src/stripe/webhook.js";
import { createWriterMetrics } from "../../src/writer/metrics.js";
import { CHART, Helm, one, type Manifest } from "./helm.js";

/**
 * The chart's Grafana dashboard, rendered by helm: provisioned by a ConfigMap with the label
 * Grafana's sidecar watches, valid dashboard JSON, and every query built only from metrics the
 * services really export (read from their own registries), covering every proofgate metric.
 */

interface ConfigMap extends Manifest {
  data: Record<string, string>;
}
interface Dashboard {
  uid: string;
  title: string;
  templating: { list: { name: string; type: string }[] };
  panels: { id: number; type: string; title: string; datasource?: { uid: string }; targets?: { expr: string; refId: string }[] }[];
}

let helm: Helm;
beforeAll(() => {
  helm = new Helm();
});
afterAll(() => helm.dispose());

/** Every series name the writer and the sidecar expose (histograms as _bucket, _sum and _count). */
async function exportedNames(): Promise<Set<string>> {
  const writer = createRegistry();
  createWriterMetrics(writer, { outbox: () => ({ count: 0, oldestAtMs: undefined }), headRevision: () => 0, natsConnected: () => true, now: Date.now });
  createStripeWebhookMetrics(writer);
  const sidecar = createRegistry();
  new SidecarMetrics(sidecar, { revision: () => 0, head: () => 0, ageSeconds: () => 0, heartbeatAgeSeconds: () => 0, stale: () => false, ready: () => true, connected: () => true });
  const names = new Set<string>();
  for (const r of [writer, sidecar])
    for (const m of await r.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m.name + s);
    }
  return names;
}

describe("proofgate chart: Grafana dashboard", () => {
  it("is off by default", () => {
    expect(helm.template(CHART, { release: "pg" }).filter((m) => m.metadata.name.endsWith("grafana-dashboard"))).toEqual([]);
  });

  it("is a ConfigMap labelled for Grafana's sidecar whose queries use only exported metrics, and all of proofgate's", async () => {
    const manifests = helm.template(CHART, { release: "pg", set: ["grafanaDashboard.enabled=true", "grafanaDashboard.folder=Payments"] });
    const cm = one<ConfigMap>(manifests, "ConfigMap", "pg-proofgate-grafana-dashboard");
    expect(cm.metadata.labels?.["grafana_dashboard"]).toBe("1");
    expect(cm.metadata.annotations?.["grafana_folder"]).toBe("Payments");
    const dashboard = JSON.parse(cm.data["proofgate.json"] ?? "") as Dashboard;
    expect(dashboard.uid).toBe("proofgate");
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "namespace"]);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);

    const exported = await exportedNames();
    const used = new Set<string>();
    for (const p of dashboard.panels.filter((p) => p.type !== "row")) {
      expect(p.datasource?.uid, p.title).toBe("${datasource}");
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        const names = (t.expr.match(/\b[a-z_]+(?=\{)/g) ?? []).filter((n) => !["sum", "max", "min", "count", "rate", "increase", "by", "histogram_quantile"].includes(n));
        expect(names.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0);
        for (const n of names) {
          expect(exported.has(n), `${p.title}: ${n} is not a metric the services export`).toBe(true);
          used.add(n.replace(/_(bucket|sum|count)$/, ""));
        }
      }
    }
    const proofgate = [...exported].filter((n) => n.startsWith("proofgate_") && !/_(bucket|sum|count)$/.test(n));
    expect(proofgate.filter((n) => !used.has(n))).toEqual([]);
  });

  it("can be provisioned into Grafana's namespace with another label", () => {
    const manifests = helm.template(CHART, { release: "pg", set: ["grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring", "grafanaDashboard.label=dashboards"] });
    const cm = one<ConfigMap>(manifests, "ConfigMap", "pg-proofgate-grafana-dashboard");
    expect(cm.metadata).toMatchObject({ namespace: "monitoring", labels: { dashboards: "1" } });
    expect(cm.metadata.labels?.["grafana_dashboard"]).toBeUndefined();
  });
});
