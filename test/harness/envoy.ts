/**
 * A client for `envoy.service.auth.v3.Authorization/Check` built from Envoy's own published
 * protos (the ones `@grpc/grpc-js-xds` ships), the way Envoy's ext_authz filter calls it.
 * Requests are checked field by field against Envoy's message descriptors before they are sent,
 * so a test cannot pass by sending a field name Envoy does not have.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { unaryCall, type UnaryMethod } from "../../src/transport/grpc-client.js";
import { AUTHORIZATION_SERVICE, ENVOY_LOADER_OPTIONS, ENVOY_PROTO_DIRS, EXTERNAL_AUTH_PROTO } from "../../src/sidecar/extauthz/envoy.js";

interface FieldDescriptor {
  name: string;
  type: string;
  typeName: string;
  label: string;
  oneofIndex?: number;
}
interface MessageDescriptor {
  name: string;
  field: FieldDescriptor[];
  nestedType: MessageDescriptor[];
  options?: { mapEntry?: boolean } | null;
}

let defs: protoLoader.PackageDefinition | undefined;
export function envoyDefinitions(): protoLoader.PackageDefinition {
  defs ??= protoLoader.loadSync(EXTERNAL_AUTH_PROTO, { ...ENVOY_LOADER_OPTIONS, includeDirs: [...ENVOY_PROTO_DIRS] });
  return defs;
}

/** A message's descriptor; a relative type name is resolved from the scope it was written in, as protoc does. */
function descriptor(typeName: string, scope = ""): { name: string; type: MessageDescriptor } {
  const defs = envoyDefinitions();
  const parts = scope.split(".");
  const candidates = typeName.startsWith(".") ? [typeName.slice(1)] : [...parts.map((_, i) => [...parts.slice(0, parts.length - i), typeName].join(".")), typeName];
  for (const name of candidates) {
    // Top-level messages are keyed by full name; nested ones are found through their parent's nestedType.
    const segments = name.split(".");
    for (let k = segments.length; k > 0; k--) {
      let type = (defs[segments.slice(0, k).join(".")] as { type?: MessageDescriptor } | undefined)?.type;
      for (const nested of segments.slice(k)) type = type?.nestedType.find((n) => n.name === nested);
      if (type) return { name, type };
    }
  }
  throw new Error(`no message ${typeName} (from ${scope}) in Envoy's protos`);
}

/** Throws unless every key of `value` (recursively) is a field of Envoy's message `typeName`. */
export function strictEnvoyMessage(typeName: string, value: unknown, path = typeName): void {
  if (typeof value !== "object" || value === null) throw new Error(`${path}: must be an object`);
  const desc = descriptor(typeName).type;
  for (const [key, v] of Object.entries(value)) {
    const f = desc.field.find((x) => x.name === key);
    if (!f) throw new Error(`${path}.${key}: not a field of ${typeName} (fields: ${desc.field.map((x) => x.name).join(", ")})`);
    if (f.type !== "TYPE_MESSAGE" || v === null || v === undefined) continue;
    const inner = descriptor(f.typeName, typeName);
    if (inner.type.options?.mapEntry) {
      const valueField = inner.type.field.find((x) => x.name === "value");
      if (valueField?.type === "TYPE_MESSAGE") {
        const valueType = descriptor(valueField.typeName, inner.name).name;
        for (const [k, mv] of Object.entries(v as object)) strictEnvoyMessage(valueType, mv, `${path}.${key}[${k}]`);
      }
    } else if (f.label === "LABEL_REPEATED") {
      (v as unknown[]).forEach((item, i) => strictEnvoyMessage(inner.name, item, `${path}.${key}[${i}]`));
    } else {
      strictEnvoyMessage(inner.name, v, `${path}.${key}`);
    }
  }
}

export interface HeaderOption {
  header: { key: string; value: string };
  append_action: string;
}

/** `envoy.service.auth.v3.CheckResponse` as decoded with Envoy's protos (proto field names, enum names). */
export interface EnvoyCheckResponse {
  status: { code: number; message: string };
  http_response: "ok_response" | "denied_response";
  ok_response?: { headers: HeaderOption[]; headers_to_remove: string[] };
  denied_response?: { status: { code: string }; headers: HeaderOption[]; body: string };
}

export interface HttpAttributes {
  method?: string;
  host?: string;
  path: string;
  headers?: Record<string, string>;
  header_map?: { headers: { key: string; value?: string; raw_value?: Buffer }[] };
}

type CheckFn = UnaryMethod<unknown, EnvoyCheckResponse>;

export class EnvoyAuthzClient {
  private readonly client: grpc.Client & { Check: CheckFn };

  constructor(readonly address: string) {
    const Ctor = grpc.makeGenericClientConstructor(envoyDefinitions()[AUTHORIZATION_SERVICE] as grpc.ServiceDefinition, "Authorization");
    this.client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as EnvoyAuthzClient["client"];
  }

  /** What Envoy's ext_authz filter sends for one HTTP request. */
  check(http: HttpAttributes): Promise<EnvoyCheckResponse> {
    const req = {
      attributes: {
        source: { address: { socket_address: { address: "127.0.0.1", port_value: 40000 } } },
        destination: { address: { socket_address: { address: "127.0.0.1", port_value: 8080 } } },
        request: {
          time: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
          http: { id: "1", method: "GET", host: "api.example.com", scheme: "http", protocol: "HTTP/1.1", ...http },
        },
        context_extensions: {},
      },
    };
    strictEnvoyMessage("envoy.service.auth.v3.CheckRequest", req);
    return unaryCall<EnvoyCheckResponse>((md, o, cb) => this.client.Check(req, md, o, cb));
  }

  close(): void {
    this.client.close();
  }
}

/** The headers of an answer, by name (append_action checked: every one overwrites). */
export function answerHeaders(res: EnvoyCheckResponse): Record<string, string> {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  const out: Record<string, string> = {};
  for (const h of list) {
    if (h.append_action !== "OVERWRITE_IF_EXISTS_OR_ADD") throw new Error(`header ${h.header.key}: append_action ${h.append_action}`);
    out[h.header.key] = h.header.value;
  }
  return out;
}

/** The HTTP status the caller gets: 200 when allowed (Envoy forwards), else the denial's code. */
export function httpStatusOf(res: EnvoyCheckResponse): number {
  if (res.http_response === "ok_response") return 200;
  const name = res.denied_response?.status.code ?? "";
  const codes: Record<string, number> = { BadRequest: 400, Unauthorized: 401, PaymentRequired: 402, Forbidden: 403, TooManyRequests: 429, ServiceUnavailable: 503 };
  const n = codes[name];
  if (n === undefined) throw new Error(`unexpected HttpStatus ${name}`);
  return n;
}
