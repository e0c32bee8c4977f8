/**
 * The ext_authz workload: a rules file with one route per catalog feature the Check mix asks
 * about (seats with the quantity in the path), and the CheckRequest Envoy's ext_authz filter
 * sends for such a request (a browser-like header set).
 */
import { stringify } from "yaml";
import { CHECK_FEATURES } from "./data.js";
import type { CheckRequest } from "#proofgate/sidecar/extauthz/envoy.js";

export function benchRules(identity: { header: string } | { jwt: { jwks_file: string; algorithms: string[] } }): string {
  const features = [...new Set(CHECK_FEATURES)].filter((f) => f !== "seats");
  return stringify({
    default: "deny",
    identity,
    rules: [
      { name: "seats", methods: ["POST"], host: "api.example.com", path: { pattern: "/v1/teams/{team}/seats/{count}" }, feature: "seats", quantity: { param: "count" } },
      ...features.map((f) => ({ name: f, host: "api.example.com", path: { prefix: `/v1/${f}` }, feature: f })),
    ],
  });
}

export function authzRequest(customerId: string, feature: string, quantity: number | undefined, authorization?: string): CheckRequest {
  const seats = feature === "seats";
  return {
    attributes: {
      request: {
        http: {
          method: seats ? "POST" : "GET",
          host: "api.example.com",
          path: seats ? `/v1/teams/t1/seats/${quantity ?? 1}` : `/v1/${feature}/items?limit=20`,
          headers: {
            ":authority": "api.example.com",
            ":method": seats ? "POST" : "GET",
            ":path": seats ? `/v1/teams/t1/seats/${quantity ?? 1}` : `/v1/${feature}/items?limit=20`,
            ":scheme": "https",
            accept: "application/json",
            "accept-encoding": "gzip, deflate, br",
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "x-forwarded-proto": "https",
            "x-request-id": "0f8fad5b-d9cb-469f-a165-70867728950e",
            ...(authorization ? { authorization } : { "x-customer-id": customerId }),
          },
          header_map: null,
        },
      },
    },
  };
}
