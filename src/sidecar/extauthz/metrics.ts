import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * ext_authz's own metrics, beside the sidecar's: entitlement decisions it asks for are also
 * counted by `proofgate_sidecar_decisions_total` and timed under `check_duration_seconds{method="Check"}`,
 * since they go through the same Check path.
 */
export class ExtAuthzMetrics {
  readonly answers: Counter<"code">;
  readonly duration: Histogram;
  readonly reloads: Counter<"outcome">;
  readonly rules: Gauge;
  readonly fileValid: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.answers = new Counter({ name: "proofgate_sidecar_ext_authz_answers_total", help: "ext_authz Check answers, by the HTTP status they give (200 = allowed).", labelNames: ["code"], registers });
    this.duration = new Histogram({
      name: "proofgate_sidecar_ext_authz_duration_seconds",
      help: "Time to answer an ext_authz Check inside the sidecar: rule match, identity (JWT verification), the check and the answer.",
      buckets: [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1],
      registers,
    });
    this.reloads = new Counter({ name: "proofgate_sidecar_ext_authz_rules_reloads_total", help: "Rules file (or JWKS) changes: applied, or refused (the previous rules stay).", labelNames: ["outcome"], registers });
    this.rules = new Gauge({ name: "proofgate_sidecar_ext_authz_rules", help: "Route rules in force.", registers });
    this.fileValid = new Gauge({ name: "proofgate_sidecar_ext_authz_rules_file_valid", help: "0 while the rules file on disk was refused and older rules are in force.", registers });
  }
}
