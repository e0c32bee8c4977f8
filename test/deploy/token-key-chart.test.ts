import { afterAll, beforeAll, expect, test } from "vitest";
import { APP_CHART, CHART, Helm, container, one, type Workload } from "./helm.js";

/**
 * The customer token key (docs/security.md) reaches every process that computes customer tokens,
 * from a Secret: the writer, the sidecar, and the application for the client's local mode.
 */
let helm: Helm;
let appChart: string;
beforeAll(() => {
  helm = new Helm();
  appChart = helm.withDependencies(APP_CHART);
});
afterAll(() => helm.dispose());

const fromSecret = { secretKeyRef: { name: "proofgate-token-key", key: "customer-token-key" } };

test("the writer takes PROOFGATE_CUSTOMER_TOKEN_KEY from the Secret, and has none without one", () => {
  const sts = one<Workload>(helm.template(CHART, { release: "pg", set: ["customerTokenKey.existingSecret=proofgate-token-key"] }), "StatefulSet");
  const writer = sts.spec.template.spec.containers[0];
  expect(writer?.env?.find((e) => e.name === "PROOFGATE_CUSTOMER_TOKEN_KEY")?.valueFrom).toEqual(fromSecret);
  const plain = one<Workload>(helm.template(CHART, { release: "pg" }), "StatefulSet").spec.template.spec.containers[0];
  expect(plain?.env?.some((e) => e.name === "PROOFGATE_CUSTOMER_TOKEN_KEY") ?? false).toBe(false);
});

test("the sidecar, and the application sharing its replica, take the same key", () => {
  const set = ["proofgateSidecar.customerTokenKey.existingSecret=proofgate-token-key", "proofgateSidecar.replica.shareWithApp=true"];
  const pod = one<Workload>(helm.template(appChart, { release: "shop", set }), "Deployment").spec.template.spec;
  for (const name of ["proofgate-sidecar", "app"]) {
    expect(container(pod, name).env?.find((e) => e.name === "PROOFGATE_CUSTOMER_TOKEN_KEY")?.valueFrom, name).toEqual(fromSecret);
  }
});
