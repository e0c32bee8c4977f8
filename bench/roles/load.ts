/**
 * The load client: a product service calling CheckService (sidecar or echo floor) through the
 * generated grpc-js client, on one channel, as an application would. Closed loop (N callers, each
 * sending when its last answer arrived) or open loop at a fixed rate (sends on schedule whatever
 * the answers do, so a slow server cannot slow the offered load down).
 *
 * Latency is the service time of each call, send to answer, in an HDR-like histogram. In open
 * loop, `lag` is how late the client itself sent (if large, the client could not offer the rate
 * and the run says so).
 */
import * as grpc from "@grpc/grpc-js";
import {
  AccessStatus,
  CheckBatchRequest,
  CheckBatchResponse,
  CheckRequest,
  CheckResponse,
  CheckServiceClient,
} from "#proofgate/gen/proofgate/v1/check.js";
import { statusName } from "#proofgate/policy/index.js";
import { unaryCall } from "#proofgate/transport/grpc-client.js";
import { SignJWT, importJWK, type JWK } from "jose";
import { authorizationService, type CheckRequest as AuthzRequest, type CheckResponse as AuthzResponse, type HeaderValueOption } from "#proofgate/sidecar/extauthz/envoy.js";
import { CHECK_FEATURES, customerId } from "../data.js";
import { authzRequest } from "../extauthz.js";
import { Histogram, type HistogramJson } from "../histogram.js";
import { serve } from "../ipc.js";

/** `authz`: Envoy's ext_authz Check, customer id in a header; `authz-jwt`: in a signed JWT. */
export type Rpc = "check" | "batch" | "authz" | "authz-jwt";

export interface RunPlan {
  readonly rpc: Rpc;
  readonly mode: "closed" | "rate";
  readonly concurrency?: number;
  readonly rate?: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  /** Ask about the first `hotSet` customers only (uniformly among them); else about all of them. */
  readonly hotSet?: number;
}

/** Two servers measured together: what `runInterleaved` answers, one result per server. */
export interface InterleavedResult {
  readonly a: RunResult;
  readonly b: RunResult;
}

export interface RunResult {
  readonly hist: HistogramJson;
  readonly lag?: HistogramJson;
  /** Calls answered in the measured window, per second. */
  readonly throughput: number;
  readonly completed: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Open loop: sends skipped because too many calls were outstanding. */
  readonly dropped: number;
  readonly windowMs: number;
  readonly statuses: Record<string, number>;
  /** Calls answered since the run started, warm-up included. */
  readonly answered: number;
}

const BATCH = 10;
const MAX_OUTSTANDING = 20_000;
/**
 * Every call's deadline: a call that gets no answer (a stalled connection) ends as an error
 * rather than holding its run open for good. Far above any latency a run records.
 */
const CALL_DEADLINE_MS = 30_000;
const NO_METADATA = new grpc.Metadata();
const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + CALL_DEADLINE_MS });

/** The answer's status: the AccessStatus name, or for ext_authz its x-proofgate-status (HTTP code when absent). */
type Call = (cb: (err: grpc.ServiceError | null, status: string | undefined) => void) => void;

type AuthzCallback = (err: grpc.ServiceError | null, res: AuthzResponse | undefined) => void;
type AuthzClient = grpc.Client & {
  Check: ((req: AuthzRequest, cb: AuthzCallback) => void) & ((req: AuthzRequest, md: grpc.Metadata, options: grpc.CallOptions, cb: AuthzCallback) => void);
};

function authzStatus(res: AuthzResponse | undefined): string | undefined {
  if (!res) return undefined;
  // Decoded with defaults, the oneof's other member is present as null.
  const r = res as { ok_response?: { headers: readonly HeaderValueOption[] } | null; denied_response?: { headers: readonly HeaderValueOption[] } | null };
  const headers = r.ok_response?.headers ?? r.denied_response?.headers ?? [];
  return headers.find((h) => h.header.key === "x-proofgate-status")?.header.value ?? (r.ok_response ? "200" : "denied");
}

/** One server's answers from `windowStart` on; `mark` hands them out and starts a new window. */
function recorder(windowStart: number, openLoop: boolean, endAt: number | undefined) {
  const hist = new Histogram();
  const lags = new Histogram();
  let statuses: Record<string, number> = {};
  let completed = 0;
  let errors = 0;
  let dropped = 0;
  let firstError: string | undefined;
  /** Every call answered since the start, warm-up included (for CPU per call). */
  let answered = 0;
  return {
    record(t0: number, err: grpc.ServiceError | null, status: string | undefined): void {
      const t1 = performance.now();
      answered++;
      if (t0 < windowStart) return;
      if (err) {
        errors++;
        firstError ??= `${err.code}: ${err.details}`;
        return;
      }
      hist.record((t1 - t0) * 1e6);
      completed++;
      const s = status ?? "?";
      statuses[s] = (statuses[s] ?? 0) + 1;
    },
    /** Open loop: how late the client sent a call it meant to send at `intended`. */
    lag(intended: number, sent: number): void {
      if (intended >= windowStart) lags.record((sent - intended) * 1e6);
    },
    drop(): void {
      dropped++;
    },
    mark(): RunResult {
      const now = performance.now();
      const windowMs = (endAt === undefined ? now : Math.min(now, endAt)) - windowStart;
      const out: RunResult = {
        hist: hist.toJSON(),
        lag: openLoop ? lags.toJSON() : undefined,
        throughput: (completed / windowMs) * 1000,
        completed,
        errors,
        ...(firstError ? { firstError } : {}),
        dropped,
        windowMs,
        statuses,
        answered,
      } as RunResult;
      hist.reset();
      lags.reset();
      completed = 0;
      errors = 0;
      dropped = 0;
      firstError = undefined;
      statuses = {};
      windowStart = now;
      return out;
    },
  };
}

export function start(): void {
  let client: CheckServiceClient | undefined;
  /** The second server of an interleaved run (the echo floor). */
  let other: CheckServiceClient | undefined;
  let authz: AuthzClient | undefined;
  /** The second server's ext_authz client (`connectSecond`'s address). */
  let otherAuthz: AuthzClient | undefined;
  let address = "";
  let otherAddress = "";
  let tokens: string[] = [];
  let customers = 1;
  let background: { stop: () => void; mark: () => RunResult } | undefined;

  const r = Math.random;
  const feature = (): string => CHECK_FEATURES[Math.floor(r() * CHECK_FEATURES.length)] as string;
  /**
   * Seats asked for: random; in a hot set, the customer's own seat count (a product service asks
   * about the seats its customer has, not about a random number each time).
   */
  const seats = (i: number, hot: boolean): number => (hot ? 1 + (i % 20) : 1 + Math.floor(r() * 20));
  /** Among the first `pool` customers (all of them unless a hot set). */
  const checkRequest = (pool = customers): CheckRequest => {
    const f = feature();
    const i = Math.floor(r() * pool);
    return { customerId: customerId(i), feature: f, quantity: f === "seats" ? seats(i, pool < customers) : undefined, minRevision: undefined };
  };
  /** A page asking about one customer: 10 features in one round trip. */
  const batchRequest = (pool = customers): CheckBatchRequest => {
    const i = Math.floor(r() * pool);
    const id = customerId(i);
    const checks: CheckRequest[] = [];
    const start = Math.floor(r() * CHECK_FEATURES.length);
    for (let k = 0; k < BATCH; k++) {
      const f = CHECK_FEATURES[(start + k) % CHECK_FEATURES.length] as string;
      checks.push({ customerId: id, feature: f, quantity: f === "seats" ? seats(i, pool < customers) : undefined, minRevision: undefined });
    }
    return { checks, minRevision: undefined };
  };
  const c = (): CheckServiceClient => {
    if (!client) throw new Error("not connected");
    return client;
  };
  const newAuthzClient = (at: string): AuthzClient => {
    const Ctor = grpc.makeGenericClientConstructor(authorizationService(), "Authorization");
    return new Ctor(at, grpc.credentials.createInsecure()) as unknown as AuthzClient;
  };
  /** The sidecar's ext_authz client, or the second server's. */
  const authzClient = (second: boolean): AuthzClient => {
    if (second) return (otherAuthz ??= newAuthzClient(otherAddress));
    return (authz ??= newAuthzClient(address));
  };
  const name = (s: AccessStatus | undefined): string | undefined => (s === undefined ? undefined : statusName(s));
  /** One call of `rpc` to `to` (the sidecar unless given: the echo of an interleaved run). */
  const call = (rpc: Rpc, hotSet: number | undefined, to?: CheckServiceClient): Call => {
    if (rpc === "authz" || rpc === "authz-jwt") {
      const cl = authzClient(to !== undefined);
      const jwt = rpc === "authz-jwt";
      if (jwt && tokens.length === 0) throw new Error("no tokens: connect with jwt");
      return (cb) => {
        const req = checkRequest();
        const auth = jwt ? `Bearer ${tokens[Math.floor(r() * tokens.length)] ?? ""}` : undefined;
        cl.Check(authzRequest(req.customerId, req.feature, req.quantity, auth), NO_METADATA, deadline(), (err, res) => cb(err, authzStatus(res)));
      };
    }
    const cl = to ?? c();
    const pool = Math.min(hotSet ?? customers, customers);
    if (rpc === "check") return (cb) => cl.check(checkRequest(pool), NO_METADATA, deadline(), (err, res: CheckResponse | undefined) => cb(err, name(res?.status)));
    return (cb) => cl.checkBatch(batchRequest(pool), NO_METADATA, deadline(), (err, res: CheckBatchResponse | undefined) => cb(err, name(res?.results[0]?.status)));
  };

  /** One server's calls and where their answers are recorded. */
  interface Side {
    readonly fire: Call;
    readonly rec: ReturnType<typeof recorder>;
  }

  /** Closed loop: `concurrency` calls always in flight to each side until `finished()`. */
  function closedLoop(sides: readonly Side[], concurrency: number, finished: () => boolean, done: () => void): void {
    let running = sides.length * concurrency;
    const loop = (side: Side): void => {
      const t0 = performance.now();
      side.fire((err, status) => {
        side.rec.record(t0, err, status);
        if (!finished()) loop(side);
        else if (--running === 0) done();
      });
    };
    for (let i = 0; i < concurrency; i++) for (const side of sides) loop(side);
  }

  /**
   * Open loop: `rate` calls a second offered to each side until `finished()`, the calls of one
   * instant sent together (which side goes first alternates); `done` once the last is answered.
   */
  function openLoop(sides: readonly Side[], rate: number, finished: () => boolean, done: () => void): void {
    const interval = 1000 / rate;
    const reversed = [...sides].reverse();
    const begin = performance.now();
    let i = 0;
    let outstanding = 0;
    let timerDone = false;
    const pump = (): void => {
      const t = performance.now();
      while (begin + i * interval <= t) {
        const intended = begin + i * interval;
        for (const side of i++ % 2 === 0 ? sides : reversed) {
          if (outstanding >= MAX_OUTSTANDING) {
            side.rec.drop();
            continue;
          }
          outstanding++;
          const t0 = performance.now();
          side.rec.lag(intended, t0);
          side.fire((err, status) => {
            outstanding--;
            side.rec.record(t0, err, status);
            if (timerDone && outstanding === 0) done();
          });
        }
      }
      if (finished()) {
        timerDone = true;
        if (outstanding === 0) done();
        return;
      }
      setTimeout(pump, Math.max(0, begin + i * interval - performance.now() - 0.2));
    };
    pump();
  }

  /** Runs until `endAt` (ms) or forever when undefined; measures from `measureFrom`. */
  function runner(plan: Omit<RunPlan, "durationMs" | "warmupMs">, measureFrom: number, endAt: number | undefined, done: () => void) {
    const side: Side = { fire: call(plan.rpc, plan.hotSet), rec: recorder(measureFrom, plan.mode === "rate", endAt) };
    let stopped = false;
    const finished = (): boolean => stopped || (endAt !== undefined && performance.now() >= endAt);
    if (plan.mode === "closed") closedLoop([side], plan.concurrency ?? 1, finished, done);
    else openLoop([side], plan.rate ?? 1, finished, done);
    return {
      stop: () => {
        stopped = true;
      },
      mark: (): RunResult => side.rec.mark(),
    };
  }

  /**
   * The sidecar (`client`) and the second server (`other`) measured over the same moments of the
   * machine, so its drift, which moves whole windows by more than the margins judged, cancels out
   * of their ratio. One call at a time, the calls alternate between them: each server is idle
   * while the other answers. With more in flight, or at a rate, both are loaded at once
   * (`concurrency` calls in flight to each, or the rate offered to each) and share the cores.
   * Either way each process's CPU time is its own calls'.
   */
  function interleaved(plan: Omit<RunPlan, "durationMs" | "warmupMs">, measureFrom: number, endAt: number, done: () => void) {
    const second = other;
    if (!second) throw new Error("not connected to a second server (connectSecond)");
    const rate = plan.mode === "rate";
    const sides = [
      { fire: call(plan.rpc, plan.hotSet), rec: recorder(measureFrom, rate, endAt) },
      { fire: call(plan.rpc, plan.hotSet, second), rec: recorder(measureFrom, rate, endAt) },
    ] as const;
    const finished = (): boolean => performance.now() >= endAt;
    const concurrency = plan.concurrency ?? 1;
    if (rate) openLoop(sides, plan.rate ?? 1, finished, done);
    else if (concurrency > 1) closedLoop(sides, concurrency, finished, done);
    else {
      let k = 0;
      const loop = (): void => {
        const side = sides[k++ % 2] as Side;
        const t0 = performance.now();
        side.fire((err, status) => {
          side.rec.record(t0, err, status);
          if (!finished()) loop();
          else done();
        });
      };
      loop();
    }
    return { mark: (): InterleavedResult => ({ a: sides[0].rec.mark(), b: sides[1].rec.mark() }) };
  }

  serve(
    {
      connect: async (a: { address: string; customers: number; channelOptions?: grpc.ChannelOptions }) => {
        client?.close();
        authz?.close();
        authz = undefined;
        address = a.address;
        customers = a.customers;
        client = new CheckServiceClient(a.address, grpc.credentials.createInsecure(), a.channelOptions);
        const cl = client;
        await new Promise<void>((resolve, reject) => cl.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
        return {};
      },
      /** A second server for `runInterleaved`, beside the one `connect` named. */
      connectSecond: async (a: { address: string }) => {
        other?.close();
        otherAuthz?.close();
        otherAuthz = undefined;
        otherAddress = a.address;
        other = new CheckServiceClient(a.address, grpc.credentials.createInsecure());
        const cl = other;
        await new Promise<void>((resolve, reject) => cl.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
        return {};
      },
      /** Both servers over the same window: one call at a time, alternating; or `concurrency` in flight, or the rate, to each at once (see `interleaved`). */
      runInterleaved: (plan: RunPlan) =>
        new Promise<InterleavedResult>((resolve) => {
          const t = performance.now();
          let h: { mark: () => InterleavedResult } | undefined = undefined;
          h = interleaved(plan, t + plan.warmupMs, t + plan.warmupMs + plan.durationMs, () => resolve(h?.mark() as InterleavedResult));
        }),
      run: (plan: RunPlan) =>
        new Promise<RunResult>((resolve) => {
          const t = performance.now();
          let h: { mark: () => RunResult } | undefined = undefined;
          h = runner(plan, t + plan.warmupMs, t + plan.warmupMs + plan.durationMs, () => {
            // Measured up to the end of the window, not to the last straggler.
            resolve(h?.mark() as RunResult);
          });
        }),
      /**
       * Asks twice about every feature of each of the first `hotSet` customers (one CheckBatch
       * each, 16 in flight): the steady state of a server that has been answering that hot set.
       * Twice, because the sidecar's answer cache keeps a customer from its second ask on.
       */
      prime: async (a: { hotSet: number }) => {
        const cl = c();
        const features = [...new Set(CHECK_FEATURES)];
        const n = Math.min(a.hotSet, customers);
        for (let pass = 0; pass < 2; pass++) {
          let next = 0;
          const worker = async (): Promise<void> => {
            while (next < n) {
              const i = next++;
              const checks = features.map((f) => ({ customerId: customerId(i), feature: f, quantity: f === "seats" ? seats(i, true) : undefined, minRevision: undefined }));
              await unaryCall<CheckBatchResponse>((md, o, cb) => cl.checkBatch({ checks, minRevision: undefined }, md, o, cb));
            }
          };
          await Promise.all(Array.from({ length: 16 }, worker));
        }
        return { customers: n };
      },
      /** Signs `count` tokens (ES256, 10 minutes) for random customers, for `authz-jwt`. */
      tokens: async (a: { privateJwk: JWK; kid: string; count: number }) => {
        const key = await importJWK(a.privateJwk, "ES256");
        const now = Math.floor(Date.now() / 1000);
        tokens = await Promise.all(
          Array.from({ length: a.count }, () =>
            new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: a.kid }).setSubject(customerId(Math.floor(r() * customers))).setIssuedAt(now).setExpirationTime(now + 600).sign(key),
          ),
        );
        return { count: tokens.length };
      },
      /** One ext_authz call (`authz` or `authz-jwt`): its answer, e.g. to see a rules change in force or to give the echo floor a typical answer. */
      authzOnce: (a: { rpc: Rpc }) =>
        new Promise<{ status: string | undefined; response: AuthzResponse | undefined }>((resolve, reject) => {
          const cl = authzClient(false);
          const req = checkRequest();
          const auth = a.rpc === "authz-jwt" ? `Bearer ${tokens[0] ?? ""}` : undefined;
          cl.Check(authzRequest(req.customerId, "api-access", undefined, auth), (err, res) => (err ? reject(err) : resolve({ status: authzStatus(res), response: res })));
        }),
      /** An open-loop rate running until `backgroundStop`; `backgroundMark` cuts a measurement window. */
      backgroundStart: (a: { rpc: Rpc; rate: number }) => {
        background?.stop();
        background = runner({ rpc: a.rpc, mode: "rate", rate: a.rate }, performance.now(), undefined, () => undefined);
        return {};
      },
      backgroundMark: () => {
        if (!background) throw new Error("no background load");
        return background.mark();
      },
      backgroundStop: () => {
        const b = background;
        background = undefined;
        if (!b) return undefined;
        b.stop();
        return b.mark();
      },
      /** Encoded sizes and the answer mix over `n` sequential calls, and a typical answer (median size). */
      sample: async (a: { n: number }) => {
        const cl = c();
        const responses: Buffer[] = [];
        let reqBytes = 0;
        let batchReq = 0;
        let batchRes = 0;
        const statuses: Record<string, number> = {};
        let stale = 0;
        for (let i = 0; i < a.n; i++) {
          const req = checkRequest();
          reqBytes += CheckRequest.encode(req).finish().length;
          const res = await unaryCall<CheckResponse>((md, o, cb) => cl.check(req, md, o, cb));
          const s = statusName(res.status);
          statuses[s] = (statuses[s] ?? 0) + 1;
          if (res.stale) stale++;
          responses.push(Buffer.from(CheckResponse.encode(res).finish()));
        }
        for (let i = 0; i < Math.min(200, a.n); i++) {
          const req = batchRequest();
          batchReq += CheckBatchRequest.encode(req).finish().length;
          const res = await unaryCall<CheckBatchResponse>((md, o, cb) => cl.checkBatch(req, md, o, cb));
          batchRes += CheckBatchResponse.encode(res).finish().length;
        }
        const sorted = [...responses].sort((x, y) => x.length - y.length);
        const typical = sorted[Math.floor(sorted.length / 2)] ?? Buffer.alloc(0);
        const nb = Math.min(200, a.n);
        return {
          requestBytes: reqBytes / a.n,
          responseBytes: responses.reduce((s, b) => s + b.length, 0) / a.n,
          batchRequestBytes: batchReq / nb,
          batchResponseBytes: batchRes / nb,
          statuses,
          stale,
          typical,
        };
      },
    },
    () => {
      background?.stop();
      client?.close();
      other?.close();
      authz?.close();
      return Promise.resolve();
    },
  );
}
