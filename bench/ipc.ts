/**
 * Parent/child plumbing for the benchmark: every role (sidecar, echo server, load client, writer,
 * seeder...) runs in its own Node process forked from `worker.js`, and is driven by request/reply
 * messages over the IPC channel. Children may also emit events (progress samples).
 */
import { fork, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { fileURLToPath } from "node:url";

interface Request {
  readonly id: number;
  readonly op: string;
  readonly args: unknown;
}
interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly result?: unknown;
  readonly error?: string;
}
interface Event {
  readonly event: string;
  readonly data: unknown;
}

const WORKER = fileURLToPath(new URL("./worker.js", import.meta.url));

export type Handlers = Record<string, (args: never) => unknown>;

/** A forked role, from the parent's side. */
export class Child {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Map<string, ((data: unknown) => void)[]>();
  readonly exited: Promise<number | null>;
  /** performance.timeOrigin-based ms at fork time (parent clock). */
  readonly forkedAt: number;

  private constructor(
    readonly role: string,
    private readonly proc: ChildProcess,
  ) {
    this.forkedAt = performance.now();
    this.exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
    proc.on("message", (m: Reply | Event) => {
      if ("event" in m) {
        for (const l of this.listeners.get(m.event) ?? []) l(m.data);
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${role}: ${m.error ?? "failed"}`));
    });
    void this.exited.then((code) => {
      for (const p of this.pending.values()) p.reject(new Error(`${role} (pid ${proc.pid}) exited with ${code}`));
      this.pending.clear();
    });
  }

  /** Forks `worker.js <role>` and waits until it is listening for requests. */
  static async fork(role: string, options: { execArgv?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<Child> {
    const proc = fork(WORKER, [role], {
      execArgv: options.execArgv ?? [],
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      serialization: "advanced",
    });
    const child = new Child(role, proc);
    await new Promise<void>((resolve, reject) => {
      child.on("up", () => resolve());
      void child.exited.then((code) => reject(new Error(`${role} exited with ${code} before it started`)));
    });
    return child;
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  on(event: string, listener: (data: unknown) => void): void {
    const list = this.listeners.get(event) ?? [];
    list.push(listener);
    this.listeners.set(event, list);
  }

  call<T>(op: string, args: unknown = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, op, args } satisfies Request);
    });
  }

  /** Asks the role to shut down cleanly (its `close` handler), then waits for the exit; kills it after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    try {
      await this.call("exit").catch(() => undefined);
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

/** In a child: answer requests with `handlers`; `exit` calls `close` (if any) then exits. */
/**
 * Every role also answers `profileStart` and `profileStop({ file })`: a CPU profile of the role's
 * main thread over exactly one window (what `--profile` cannot separate from start-up), written
 * as a .cpuprofile.
 */
let profiler: Session | undefined;
let heapSampler: Session | undefined;
const profiling: Handlers = {
  profileStart: async () => {
    profiler ??= new Session();
    profiler.connect();
    await profiler.post("Profiler.enable");
    await profiler.post("Profiler.start");
    return {};
  },
  /** A full, compacting garbage collection (the inspector's; no flag needed). */
  collectGarbage: async () => {
    const session = new Session();
    session.connect();
    try {
      await session.post("HeapProfiler.collectGarbage");
    } finally {
      session.disconnect();
    }
    return {};
  },
  /**
   * Sampling heap profile: allocations (every `intervalBytes` on average) with their stacks.
   * `survivors`: only objects that outlived a young-generation collection (the ones that cost
   * copying and marking), whether or not a full collection took them since.
   */
  heapSampleStart: async (a: { intervalBytes?: number; survivors?: boolean }) => {
    heapSampler ??= new Session();
    heapSampler.connect();
    await heapSampler.post("HeapProfiler.enable");
    await heapSampler.post("HeapProfiler.startSampling", {
      samplingInterval: a.intervalBytes ?? 4096,
      ...(a.survivors ? { includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false } : {}),
    } as never);
    return {};
  },
  /** Ends the sampling: the estimated bytes sampled (and the profile in `file`, if given). */
  heapSampleStop: async (a: { file?: string }) => {
    if (!heapSampler) throw new Error("heapSampleStart first");
    const { profile } = await heapSampler.post("HeapProfiler.stopSampling");
    heapSampler.disconnect();
    heapSampler = undefined;
    if (a.file) await writeFile(a.file, JSON.stringify(profile));
    // Node sizes are V8's estimates of all bytes allocated there (samples scaled by the interval).
    let bytes = 0;
    const walk = (n: { selfSize: number; children: readonly typeof n[] }): void => {
      bytes += n.selfSize;
      for (const c of n.children) walk(c);
    };
    walk(profile.head);
    return { file: a.file, bytes };
  },
  profileStop: async (a: { file: string }) => {
    if (!profiler) throw new Error("profileStart first");
    const { profile } = await profiler.post("Profiler.stop");
    profiler.disconnect();
    profiler = undefined;
    await writeFile(a.file, JSON.stringify(profile));
    return { file: a.file };
  },
};

export function serve(handlers: Handlers, close?: () => Promise<void>): void {
  const send = (m: Reply | Event): void => {
    if (process.connected) process.send?.(m);
  };
  process.on("message", (m: Request) => {
    if (m.op === "exit") {
      void (async () => {
        try {
          await close?.();
        } finally {
          send({ id: m.id, ok: true });
          setTimeout(() => process.exit(0), 20);
        }
      })();
      return;
    }
    const h = handlers[m.op] ?? profiling[m.op];
    if (!h) {
      send({ id: m.id, ok: false, error: `unknown op ${m.op}` });
      return;
    }
    Promise.resolve()
      .then(() => h(m.args as never))
      .then(
        (result) => send({ id: m.id, ok: true, result }),
        (err: unknown) => send({ id: m.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
  });
  // The parent went away: do not linger.
  process.on("disconnect", () => {
    void Promise.resolve(close?.()).finally(() => process.exit(0));
  });
  send({ event: "up", data: { pid: process.pid } });
}

export function emit(event: string, data: unknown): void {
  if (process.connected) process.send?.({ event, data } satisfies Event);
}
