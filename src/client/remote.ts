import * as grpc from "@grpc/grpc-js";
import {
  CheckServiceClient,
  type CheckBatchRequest,
  type CheckBatchResponse,
  type CheckRequest,
  type CheckResponse,
  type ListEntitlementsRequest,
  type ListEntitlementsResponse,
} from "../gen/proofgate/v1/check.js";
import { unaryCall, type UnaryMethod } from "../transport/grpc-client.js";
import { fromServiceError } from "./errors.js";

export interface RetryOptions {
  /** Attempts in all, the first included (default 3). Only UNAVAILABLE is retried. */
  readonly attempts?: number;
  /** Backoff before the first retry in ms, doubled each time, with jitter (default 20). */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** CheckService over gRPC (unix socket or TCP), with deadlines and retries on UNAVAILABLE. */
export class RemoteCheck {
  private readonly client: CheckServiceClient;
  private readonly attempts: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(
    readonly address: string,
    retry: RetryOptions = {},
    channelOptions: grpc.ChannelOptions = {},
  ) {
    this.client = new CheckServiceClient(address, grpc.credentials.createInsecure(), channelOptions);
    this.attempts = Math.max(1, retry.attempts ?? 3);
    this.initialBackoffMs = retry.initialBackoffMs ?? 20;
    this.maxBackoffMs = retry.maxBackoffMs ?? 500;
  }

  check(req: CheckRequest, deadline: number): Promise<CheckResponse> {
    return this.call(this.client.check.bind(this.client), req, deadline);
  }

  checkBatch(req: CheckBatchRequest, deadline: number): Promise<CheckBatchResponse> {
    return this.call(this.client.checkBatch.bind(this.client), req, deadline);
  }

  listEntitlements(req: ListEntitlementsRequest, deadline: number): Promise<ListEntitlementsResponse> {
    return this.call(this.client.listEntitlements.bind(this.client), req, deadline);
  }

  close(): void {
    this.client.close();
  }

  /** `deadline`: absolute, Unix ms, for every attempt together. Throws a typed error (see errors.ts). */
  private async call<Req, Res>(fn: UnaryMethod<Req, Res>, req: Req, deadline: number): Promise<Res> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await unaryCall<Res>((md, o, cb) => fn(req, md, o, cb), { deadline });
      } catch (err) {
        const e = fromServiceError(err);
        if (e.code !== grpc.status.UNAVAILABLE || attempt >= this.attempts) throw e;
        // Exponential backoff with full jitter, never past the deadline.
        const backoff = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
        if (Date.now() + backoff >= deadline) throw e;
        await sleep(backoff);
      }
    }
  }
}
