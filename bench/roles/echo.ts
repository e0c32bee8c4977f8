/**
 * The floor: a bare grpc-js server implementing CheckService with canned answers of the same size
 * as the sidecar's (same generated (de)serializers, same server options), doing no other work;
 * and, given one of the sidecar's ext_authz answers, Envoy's Authorization/Check the same way
 * (Envoy's protos, loaded as the sidecar loads them).
 */
import * as grpc from "@grpc/grpc-js";
import { CheckResponse, CheckServiceService, type CheckBatchRequest, type CheckBatchResponse, type CheckRequest } from "#proofgate/gen/proofgate/v1/check.js";
import { GRPC_SERVER_OPTIONS } from "#proofgate/transport/grpc.js";
import { authorizationService, type CheckResponse as AuthzResponse } from "#proofgate/sidecar/extauthz/envoy.js";
import { serve } from "../ipc.js";

export function start(): void {
  let server: grpc.Server | undefined;
  serve(
    {
      /** `serverOptions` are added to the sidecar's (for experiments); by default the server is configured as the sidecar's is. */
      start: async (a: { socket?: string; response: Uint8Array; authzResponse?: AuthzResponse; serverOptions?: grpc.ServerOptions }) => {
        const canned = CheckResponse.decode(a.response);
        server = new grpc.Server({ ...GRPC_SERVER_OPTIONS, ...a.serverOptions });
        server.addService(CheckServiceService, {
          check: (_call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => cb(null, canned),
          checkBatch: (call: grpc.ServerUnaryCall<CheckBatchRequest, CheckBatchResponse>, cb: grpc.sendUnaryData<CheckBatchResponse>) =>
            cb(null, { results: call.request.checks.map(() => canned), revision: canned.revision, stale: false }),
          listEntitlements: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
        });
        const authz = a.authzResponse;
        if (authz) server.addService(authorizationService(), { Check: (_call: unknown, cb: grpc.sendUnaryData<AuthzResponse>) => cb(null, authz) });
        const bind = (address: string): Promise<number> =>
          new Promise((resolve, reject) => server?.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
        const port = await bind("127.0.0.1:0");
        if (a.socket) await bind(`unix:${a.socket}`);
        return { tcp: `127.0.0.1:${port}`, unix: a.socket ? `unix:${a.socket}` : undefined };
      },
    },
    async () => {
      const s = server;
      if (s) await new Promise<void>((resolve) => s.tryShutdown(() => resolve()));
    },
  );
}
