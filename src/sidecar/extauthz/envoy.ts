import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { ServiceDefinition } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * Envoy's published v3 protos as shipped by `@grpc/grpc-js-xds` (deps/envoy-api with the xds,
 * googleapis and protoc-gen-validate trees it imports), loaded at run time: the wire format is
 * Envoy's own, never a copy. The interfaces below only type the fields this package reads and
 * writes, with the proto field names (`keepCase`).
 */
const XDS_ROOT = dirname(createRequire(import.meta.url).resolve("@grpc/grpc-js-xds/package.json"));

/** Include paths for `envoy/service/auth/v3/external_auth.proto` and everything it imports. */
export const ENVOY_PROTO_DIRS: readonly string[] = ["envoy-api", "xds", "googleapis", "protoc-gen-validate"].map((d) => join(XDS_ROOT, "deps", d));
export const EXTERNAL_AUTH_PROTO = "envoy/service/auth/v3/external_auth.proto";
export const AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization";

/** Loader options: proto field names, enums as their names, 64-bit integers as strings. */
export const ENVOY_LOADER_OPTIONS: protoLoader.Options = { keepCase: true, enums: String, longs: String, defaults: true, oneofs: true };

let definition: ServiceDefinition | undefined;

/** The `Authorization` service definition (loaded once, on first use: about 100 proto files). */
export function authorizationService(): ServiceDefinition {
  definition ??= protoLoader.loadSync(EXTERNAL_AUTH_PROTO, { ...ENVOY_LOADER_OPTIONS, includeDirs: [...ENVOY_PROTO_DIRS] })[AUTHORIZATION_SERVICE] as ServiceDefinition;
  return definition;
}

// ------------------------------------------------------------------ the fields used, as loaded

/** `envoy.config.core.v3.HeaderValue` (one of `header_map.headers`). */
export interface HeaderValue {
  readonly key: string;
  readonly value: string;
  readonly raw_value?: Buffer;
}

/** `envoy.service.auth.v3.AttributeContext.HttpRequest`. */
export interface HttpRequest {
  readonly method: string;
  /** Lower-case header names; empty when Envoy sends `header_map` instead (`encode_raw_headers`). */
  readonly headers: Readonly<Record<string, string>>;
  readonly header_map?: { readonly headers: readonly HeaderValue[] } | null;
  /** The request target: path and query string. */
  readonly path: string;
  readonly host: string;
}

/** `envoy.service.auth.v3.CheckRequest`. */
export interface CheckRequest {
  readonly attributes?: { readonly request?: { readonly http?: HttpRequest | null } | null } | null;
}

/** `envoy.config.core.v3.HeaderValueOption`. */
export interface HeaderValueOption {
  readonly header: { readonly key: string; readonly value: string };
  readonly append_action: "OVERWRITE_IF_EXISTS_OR_ADD";
}

/** `envoy.service.auth.v3.CheckResponse` (the `http_response` oneof as one of its two fields). */
export type CheckResponse =
  | {
      readonly status: { readonly code: number; readonly message: string };
      readonly ok_response: { readonly headers: readonly HeaderValueOption[]; readonly headers_to_remove: readonly string[] };
    }
  | {
      readonly status: { readonly code: number; readonly message: string };
      readonly denied_response: {
        /** `envoy.type.v3.HttpStatus`: the code as its enum name (`PaymentRequired`). */
        readonly status: { readonly code: string };
        readonly headers: readonly HeaderValueOption[];
        readonly body: string;
      };
    };
