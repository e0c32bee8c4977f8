import * as grpc from "@grpc/grpc-js";
import { AdminServiceClient } from "../gen/proofgate/v1/admin.js";
import { CheckServiceClient } from "../gen/proofgate/v1/check.js";
import { IngestServiceClient } from "../gen/proofgate/v1/ingest.js";

/** Default addresses match the services' loopback defaults. */
export const DEFAULT_WRITER = "127.0.0.1:50051";
export const DEFAULT_SIDECAR = "127.0.0.1:50061";

const credentials = grpc.credentials.createInsecure();

export const writerClients = (address: string) => ({
  ingest: new IngestServiceClient(address, credentials),
  admin: new AdminServiceClient(address, credentials),
});

export const checkClient = (address: string): CheckServiceClient => new CheckServiceClient(address, credentials);

type Callback<Res> = (err: grpc.ServiceError | null, res: Res) => void;

/**
 * A unary call as a promise, with a deadline so a CLI never hangs on a dead address:
 * `call<CheckResponse>((md, opts, cb) => client.check(request, md, opts, cb))`.
 */
export function call<Res>(invoke: (metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, cb: Callback<Res>) => unknown, timeoutMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke(new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) {
        reject(new Error(`${grpc.status[err.code]}: ${err.details || err.message}`));
        return;
      }
      resolve(res);
    });
  });
}
