import { parse } from "yaml";
import { InvalidArgumentError } from "../../errors/index.js";
import { parseDuration } from "../../config/options.js";
import { MAX_FEATURE_BYTES } from "../check/validate.js";

/**
 * The ext_authz rules file (YAML), parsed and compiled. Pure: text in, matchers out; reading,
 * watching and the JWKS file are `loader.ts`. Every error names the rule (`rules[2] (seats)`)
 * and the field, as in the file. See docs/ext-authz.md for the format.
 */

export const MAX_RULES = 10_000;
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"] as const;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;

export type Quantity = { readonly header: string } | { readonly param: string };

export interface Rule {
  /** `name` from the file, else `rules[i]`. */
  readonly name: string;
  readonly feature: string;
  readonly quantity: Quantity | undefined;
  /** Path parameters when the rule matches this request, else undefined. */
  match(host: string, method: string, path: string): Readonly<Record<string, string>> | undefined;
}

export type IdentityConfig =
  | { readonly kind: "header"; readonly header: string }
  | {
      readonly kind: "jwt";
      /** As written in the file; `loader.ts` resolves it against the rules file's directory. */
      readonly jwksFile: string;
      readonly header: string;
      readonly claim: string;
      readonly issuer: string | undefined;
      readonly audience: readonly string[] | undefined;
      readonly algorithms: readonly string[] | undefined;
      readonly clockToleranceSeconds: number;
    };

export interface RulesConfig {
  readonly defaultAction: "allow" | "deny";
  readonly identity: IdentityConfig;
  readonly rules: readonly Rule[];
}

type Doc = Record<string, unknown>;

function record(v: unknown, field: string): Doc {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InvalidArgumentError(field, "must be a mapping");
  return v as Doc;
}

function str(v: unknown, field: string): string {
  if (typeof v !== "string" || v === "") throw new InvalidArgumentError(field, "must be a non-empty string");
  return v;
}

function only(d: Doc, field: string, keys: readonly string[]): void {
  for (const k of Object.keys(d)) {
    if (!keys.includes(k)) throw new InvalidArgumentError(field === "" ? k : `${field}.${k}`, `unknown key (expected one of ${keys.join(", ")})`);
  }
}

function strings(v: unknown, field: string): string[] {
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length === 0) throw new InvalidArgumentError(field, "must be a string or a non-empty list of strings");
  return list.map((x, i) => str(x, `${field}[${i}]`));
}

function headerName(v: unknown, field: string): string {
  const h = str(v, field).toLowerCase();
  if (!HEADER_NAME.test(h)) throw new InvalidArgumentError(field, `"${h}" is not an HTTP header name`);
  return h;
}

export function parseRulesText(text: string): RulesConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new InvalidArgumentError("rules file", `not valid YAML: ${(err as Error).message}`);
  }
  const root = record(doc, "rules file");
  only(root, "", ["default", "identity", "rules"]);
  const def = root["default"];
  if (def !== "allow" && def !== "deny") throw new InvalidArgumentError("default", `required: allow or deny, for requests no rule matches (got ${JSON.stringify(def)})`);
  const list = root["rules"];
  if (!Array.isArray(list)) throw new InvalidArgumentError("rules", "must be a list (it may be empty)");
  if (list.length > MAX_RULES) throw new InvalidArgumentError("rules", `at most ${MAX_RULES} rules, got ${list.length}`);
  const names = new Set<string>();
  const rules = list.map((raw, i) => {
    const named = typeof raw === "object" && raw !== null && typeof (raw as Doc)["name"] === "string" ? ` (${String((raw as Doc)["name"])})` : "";
    const rule = compileRule(raw, i, `rules[${i}]${named}`);
    if (names.has(rule.name)) throw new InvalidArgumentError(`rules[${i}]${named}.name`, "used by an earlier rule");
    names.add(rule.name);
    return rule;
  });
  return { defaultAction: def, identity: parseIdentity(root["identity"]), rules };
}

function parseIdentity(raw: unknown): IdentityConfig {
  const d = record(raw, "identity");
  only(d, "identity", ["header", "jwt"]);
  if ((d["header"] === undefined) === (d["jwt"] === undefined)) throw new InvalidArgumentError("identity", "set exactly one of header and jwt");
  if (d["header"] !== undefined) return { kind: "header", header: headerName(d["header"], "identity.header") };
  const j = record(d["jwt"], "identity.jwt");
  only(j, "identity.jwt", ["jwks_file", "header", "claim", "issuer", "audience", "algorithms", "clock_tolerance"]);
  const tolerance = j["clock_tolerance"];
  if (tolerance !== undefined && typeof tolerance !== "string" && typeof tolerance !== "number") throw new InvalidArgumentError("identity.jwt.clock_tolerance", "must be a duration like 30s");
  return {
    kind: "jwt",
    jwksFile: str(j["jwks_file"], "identity.jwt.jwks_file"),
    header: j["header"] === undefined ? "authorization" : headerName(j["header"], "identity.jwt.header"),
    claim: j["claim"] === undefined ? "sub" : str(j["claim"], "identity.jwt.claim"),
    issuer: j["issuer"] === undefined ? undefined : str(j["issuer"], "identity.jwt.issuer"),
    audience: j["audience"] === undefined ? undefined : strings(j["audience"], "identity.jwt.audience"),
    algorithms: j["algorithms"] === undefined ? undefined : strings(j["algorithms"], "identity.jwt.algorithms"),
    clockToleranceSeconds: tolerance === undefined ? 0 : Math.floor(parseDuration(String(tolerance), "identity.jwt.clock_tolerance") / 1000),
  };
}

function compileRule(raw: unknown, i: number, label: string): Rule {
  const d = record(raw, label);
  only(d, label, ["name", "host", "methods", "path", "feature", "quantity"]);
  const name = d["name"] === undefined ? `rules[${i}]` : str(d["name"], `${label}.name`);
  const feature = str(d["feature"], `${label}.feature`);
  if (Buffer.byteLength(feature) > MAX_FEATURE_BYTES) throw new InvalidArgumentError(`${label}.feature`, `at most ${MAX_FEATURE_BYTES} bytes`);
  const hosts = d["host"] === undefined ? undefined : strings(d["host"], `${label}.host`).map((h, j) => hostMatcher(h, `${label}.host[${j}]`));
  let methods: Set<string> | undefined;
  if (d["methods"] !== undefined) {
    methods = new Set(
      strings(d["methods"], `${label}.methods`).map((m, j) => {
        const u = m.toUpperCase();
        if (!(METHODS as readonly string[]).includes(u)) throw new InvalidArgumentError(`${label}.methods[${j}]`, `"${m}" is not an HTTP method (${METHODS.join(", ")})`);
        return u;
      }),
    );
  }
  const path = pathMatcher(d["path"], `${label}.path`);
  let quantity: Quantity | undefined;
  if (d["quantity"] !== undefined) {
    const q = record(d["quantity"], `${label}.quantity`);
    only(q, `${label}.quantity`, ["header", "param"]);
    if ((q["header"] === undefined) === (q["param"] === undefined)) throw new InvalidArgumentError(`${label}.quantity`, "set exactly one of header and param");
    if (q["header"] !== undefined) quantity = { header: headerName(q["header"], `${label}.quantity.header`) };
    else {
      const param = str(q["param"], `${label}.quantity.param`);
      if (!path.params.includes(param)) throw new InvalidArgumentError(`${label}.quantity.param`, `"${param}" is not a parameter of the path pattern${path.params.length ? ` (${path.params.join(", ")})` : ""}`);
      quantity = { param };
    }
  }
  return {
    name,
    feature,
    quantity,
    match: (host, method, p) => {
      if (methods && !methods.has(method)) return undefined;
      if (hosts && !hosts.some((h) => h(host))) return undefined;
      return path.match(p);
    },
  };
}

/** `api.example.com` (exact) or `*.example.com` (any subdomain), case-insensitive; without a port in the pattern, the request's port is ignored. */
function hostMatcher(pattern: string, field: string): (host: string) => boolean {
  const p = pattern.toLowerCase();
  if (p.includes("*") && !(p.startsWith("*.") && !p.slice(2).includes("*"))) throw new InvalidArgumentError(field, `"${pattern}": a wildcard is only allowed as a leading "*."`);
  const withPort = /:\d+$/.test(p);
  return (raw) => {
    let h = raw.toLowerCase();
    if (!withPort) h = h.replace(/:\d+$/, "");
    return p.startsWith("*.") ? h.endsWith(p.slice(1)) && h.length > p.length - 1 : h === p;
  };
}

interface PathMatcher {
  readonly params: readonly string[];
  match(path: string): Readonly<Record<string, string>> | undefined;
}

const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({});

function pathMatcher(raw: unknown, field: string): PathMatcher {
  const d = record(raw, field);
  only(d, field, ["prefix", "exact", "pattern"]);
  const keys = Object.keys(d);
  if (keys.length !== 1) throw new InvalidArgumentError(field, "set exactly one of prefix, exact and pattern");
  const kind = keys[0] as "prefix" | "exact" | "pattern";
  const value = str(d[kind], `${field}.${kind}`);
  if (!value.startsWith("/")) throw new InvalidArgumentError(`${field}.${kind}`, `must start with "/", got "${value}"`);
  if (/[?#]/.test(value)) throw new InvalidArgumentError(`${field}.${kind}`, "matches the path only: no query string or fragment");
  if (kind === "exact") return { params: [], match: (p) => (p === value ? NO_PARAMS : undefined) };
  if (kind === "prefix") {
    // "/v1/admin" covers /v1/admin and /v1/admin/..., not /v1/administrators; "/v1/" is a plain prefix.
    if (value.endsWith("/")) return { params: [], match: (p) => (p.startsWith(value) ? NO_PARAMS : undefined) };
    return { params: [], match: (p) => (p === value || p.startsWith(`${value}/`) ? NO_PARAMS : undefined) };
  }
  const segments = value.split("/").slice(1);
  const params: string[] = [];
  const parts = segments.map((s, j) => {
    const m = PARAM.exec(s);
    if (m?.[1]) {
      if (params.includes(m[1])) throw new InvalidArgumentError(`${field}.pattern`, `parameter {${m[1]}} appears twice`);
      params.push(m[1]);
      return { param: m[1] };
    }
    if (/[{}]/.test(s)) throw new InvalidArgumentError(`${field}.pattern`, `segment ${j + 1} "${s}": a parameter is a whole segment, like {id}`);
    return { literal: s };
  });
  return {
    params,
    match: (p) => {
      const got = p.split("/");
      if (got.length !== parts.length + 1 || got[0] !== "") return undefined;
      const out: Record<string, string> = {};
      for (let j = 0; j < parts.length; j++) {
        const part = parts[j] as { param?: string; literal?: string };
        const seg = got[j + 1] as string;
        if (part.param === undefined) {
          if (seg !== part.literal) return undefined;
        } else {
          if (seg === "") return undefined;
          out[part.param] = safeDecode(seg);
        }
      }
      return out;
    },
  };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The path Envoy sent without its query string and fragment. */
export function pathOnly(target: string): string {
  const q = target.search(/[?#]/);
  return q === -1 ? target : target.slice(0, q);
}
