import { join } from "node:path";
import { expectConverged, type ConvergeTarget, type Converged } from "./system.js";
import { WriterClient, WriterProcess } from "./writer.js";
import { waitFor } from "./wait.js";

/** One writer process of a highly available pair, restarted on its own ledger after a kill. */
export interface WriterSlot {
  readonly name: string;
  readonly ledgerPath: string;
  proc: WriterProcess;
  client: WriterClient;
  alive: boolean;
}

/**
 * Writers `names` on one NATS (each `--writer-id <name>` with its own ledger in `dir`, plus
 * `args`), and what the HA fault tests ask of them: each one's role from `/readyz`, the leader,
 * and a killed writer brought back as a standby.
 */
export class WriterSlots {
  private constructor(
    readonly slots: WriterSlot[],
    private readonly launch: (name: string, ledgerPath: string) => Promise<{ proc: WriterProcess; client: WriterClient }>,
  ) {}

  static async start(cleanup: (() => unknown)[], natsUrl: string, dir: string, args: readonly string[], names = ["a", "b"]): Promise<WriterSlots> {
    const launch = async (name: string, ledgerPath: string): Promise<{ proc: WriterProcess; client: WriterClient }> => {
      const proc = await WriterProcess.start({ natsUrl, ledgerPath, args: [...args, "--writer-id", name] });
      cleanup.push(() => proc.stop("SIGKILL"));
      const client = new WriterClient(proc.grpcAddress);
      cleanup.push(() => client.close());
      return { proc, client };
    };
    const slots: WriterSlot[] = [];
    for (const name of names) {
      const ledgerPath = join(dir, `${name}.db`);
      slots.push({ name, ledgerPath, ...(await launch(name, ledgerPath)), alive: true });
    }
    return new WriterSlots(slots, launch);
  }

  /** `/readyz`'s body ("ready: leader", "ready: standby", …), or "" for a writer that is down. */
  async role(s: WriterSlot): Promise<string> {
    return s.alive ? (await s.proc.http("/readyz").catch(() => ({ body: "" }))).body.trim() : "";
  }

  async leader(timeoutMs = 30_000): Promise<WriterSlot> {
    return waitFor(
      async () => {
        for (const s of this.slots) if ((await this.role(s)) === "ready: leader") return s;
        return undefined;
      },
      "a leader",
      timeoutMs,
    );
  }

  /** Resolves once one writer leads and every other stands by, current. */
  async settled(timeoutMs = 30_000): Promise<void> {
    const want = ["ready: leader", ...this.slots.slice(1).map(() => "ready: standby")].sort().join();
    await waitFor(async () => (await Promise.all(this.slots.map((s) => this.role(s)))).sort().join() === want, "a leader and current standbys", timeoutMs);
  }

  /** SIGKILLs `s` (the caller waits for what should follow). */
  async kill(s: WriterSlot): Promise<void> {
    s.alive = false;
    const exit = await s.proc.stop("SIGKILL");
    s.client.close();
    if (exit.signal !== "SIGKILL") throw new Error(`writer ${s.name} exited before the kill: ${JSON.stringify(exit)}`);
  }

  /** Starts `s` again on its ledger and waits until it stands by. */
  async restart(s: WriterSlot, timeoutMs = 30_000): Promise<void> {
    Object.assign(s, await this.launch(s.name, s.ledgerPath), { alive: true });
    await waitFor(async () => (await this.role(s)) === "ready: standby", `${s.name} to stand by again`, timeoutMs);
  }

  /**
   * The leader, its state stream and `t.sidecars` converge on the fold of exactly the events sent,
   * and so does every standby's ledger; the leader's convergence is returned.
   */
  async converged(t: Omit<ConvergeTarget, "writer">): Promise<Converged> {
    const leader = await this.leader();
    const result = await expectConverged({ ...t, writer: { client: leader.client, httpAddress: leader.proc.httpAddress } });
    for (const s of this.slots.filter((x) => x !== leader)) await expectConverged({ ...t, writer: { client: s.client, httpAddress: s.proc.httpAddress }, sidecars: [] });
    return result;
  }
}
