import * as grpc from "@grpc/grpc-js";

/** A unary method of a generated grpc-js client, in its callback form. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, response: Res) => void,
) => unknown;

/** Starts one unary call with the metadata, options and callback it is given. */
export type Invoke<Res> = (metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: (err: grpc.ServiceError | null, response: Res) => void) => unknown;

export interface UnaryCallOptions {
  /** Absolute deadline, Unix ms; else `timeoutMs` from now. */
  readonly deadline?: number;
  /** Default 10 s, so a caller never hangs on a dead address. */
  readonly timeoutMs?: number;
  readonly metadata?: grpc.Metadata;
}

/**
 * One unary call as a promise, always with a deadline; rejects with grpc-js's `ServiceError`
 * (`code`, `details`): `await unaryCall<CheckResponse>((md, o, cb) => client.check(request, md, o, cb))`.
 * Every promise-style caller (CLI, dev, client library, tests, benchmark) goes through here.
 */
export function unaryCall<Res>(invoke: Invoke<Res>, o: UnaryCallOptions = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke(o.metadata ?? new grpc.Metadata(), { deadline: o.deadline ?? Date.now() + (o.timeoutMs ?? 10_000) }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}
