import * as grpc from "@grpc/grpc-js";

/** PEM contents of a listener's TLS set-up. */
export interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Verify client certificates against this CA (mutual TLS). */
  readonly clientCa?: Buffer;
}

/**
 * gRPC server credentials: plaintext without TLS; with a client CA, a client certificate signed
 * by it is required (mutual TLS).
 */
export function grpcServerCredentials(tls: TlsFiles | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.clientCa !== undefined);
}
