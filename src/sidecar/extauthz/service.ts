import { performance } from "node:perf_hooks";
import type { Counter } from "prom-client";
import { InvalidArgumentError } from "../../errors/index.js";
import type { CheckRequest as ProofgateCheck, CheckResponse as Decision } from "../../gen/proofgate/v1/check.js";
import type { Logger } from "../../observability/logger.js";
import { unary, type ServiceBinding } from "../../transport/grpc.js";
import { HTTP, allowUnmatched, answer, badRequest, noRule, unauthenticated } from "./answer.js";
import { AUTHORIZATION_SERVICE, authorizationService, type CheckRequest, type CheckResponse, type HttpRequest } from "./envoy.js";
import type { IdentityResult } from "./identity.js";
import type { RulesFile } from "./loader.js";
import type { ExtAuthzMetrics } from "./metrics.js";
import { pathOnly, type Rule } from "./rules.js";

export interface ExtAuthzDeps {
  readonly rules: RulesFile;
  /** The sidecar's Check (CheckHandler.check): staleness, stale_policy, the decision log and metrics apply as for any check. */
  readonly check: (req: ProofgateCheck) => Decision | Promise<Decision>;
  readonly metrics: ExtAuthzMetrics;
  readonly logger: Logger;
}

const QUANTITY = /^\d{1,15}$/;

/** Applies `f` at once to a plain value, after the promise otherwise: the header-identity path stays synchronous. */
function then<T, R>(v: T | Promise<T>, f: (x: T) => R | Promise<R>): R | Promise<R> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/**
 * `envoy.service.auth.v3.Authorization/Check`: the first rule matching the request's host,
 * method and path names the feature (and where the quantity comes from); the customer is
 * established from a header or a verified JWT; the sidecar's own Check decides.
 */
export class ExtAuthzHandler {
  private readonly byCode = new Map<number, Counter.Internal>();

  constructor(private readonly deps: ExtAuthzDeps) {
    for (const code of [200, ...Object.values(HTTP)]) this.byCode.set(code, deps.metrics.answers.labels(String(code)));
  }

  binding(): ServiceBinding {
    return {
      name: AUTHORIZATION_SERVICE,
      definition: authorizationService(),
      implementation: { Check: unary<CheckRequest, CheckResponse>(this.deps.logger, (req) => this.check(req)) },
    };
  }

  check(req: CheckRequest): CheckResponse | Promise<CheckResponse> {
    const started = performance.now();
    const http = req.attributes?.request?.http;
    if (!http) throw new InvalidArgumentError("attributes.request.http", "required: ext_authz answers HTTP requests only");
    return then(this.decide(http), (res) => {
      const code = "ok_response" in res ? 200 : HTTP[res.denied_response.status.code as keyof typeof HTTP];
      this.byCode.get(code)?.inc();
      this.deps.metrics.duration.observe((performance.now() - started) / 1000);
      return res;
    });
  }

  private decide(http: HttpRequest): CheckResponse | Promise<CheckResponse> {
    const rules = this.deps.rules.current;
    const method = http.method.toUpperCase();
    const path = pathOnly(http.path);
    let rule: Rule | undefined;
    let params: Readonly<Record<string, string>> | undefined;
    for (const r of rules.rules) {
      params = r.match(http.host, method, path);
      if (params) {
        rule = r;
        break;
      }
    }
    if (!rule || !params) return rules.defaultAction === "allow" ? allowUnmatched() : noRule(`no rule matches ${method} ${http.host}${path}, and the default is deny`);
    const get = headerReader(http);
    const { feature } = rule;
    let quantity: number | undefined;
    if (rule.quantity) {
      const source = "header" in rule.quantity ? `the ${rule.quantity.header} header` : `path parameter {${rule.quantity.param}}`;
      const raw = "header" in rule.quantity ? get(rule.quantity.header) : params[rule.quantity.param];
      if (raw === undefined) return badRequest(`${source} is missing (rule ${rule.name} takes the quantity from it)`, feature);
      if (!QUANTITY.test(raw.trim())) return badRequest(`${source} must be a whole number >= 0, got "${raw.slice(0, 32)}"`, feature);
      quantity = Number(raw.trim());
    }
    const verify = rules.verify;
    return then(verify.resolve(get), (who: IdentityResult) => {
      if (who.customerId === undefined) return unauthenticated(who.reason, verify.scheme, feature);
      const customerId = who.customerId;
      return then(this.deps.check({ customerId, feature, quantity, minRevision: undefined }), (d) => answer(d, feature, customerId));
    });
  }
}

/** Header lookup by lower-case name, from `headers` or, when Envoy sends raw headers, `header_map`. */
function headerReader(http: HttpRequest): (name: string) => string | undefined {
  const entries = http.header_map?.headers;
  if (!entries || entries.length === 0) return (name) => http.headers[name];
  const map = new Map<string, string>();
  for (const h of entries) {
    const key = h.key.toLowerCase();
    const value = h.value !== "" ? h.value : (h.raw_value?.toString("utf8") ?? "");
    const prev = map.get(key);
    map.set(key, prev === undefined ? value : `${prev},${value}`);
  }
  return (name) => http.headers[name] ?? map.get(name);
}
