/** Tables and verdicts of the pod profile, the herd and the 10M-customer snapshot run (issue 15). */
import { fmt, table, us, type Verdict } from "./report.js";
import type { HerdResults } from "./suites/herd.js";
import type { PodPhase, PodResults } from "./suites/pod.js";
import type { SnapshotResults } from "./suites/snapshot.js";
import type { Window } from "./suites/sidecar.js";

const MB = 2 ** 20;
const TEN_MILLION = 10_000_000;

export function podVerdicts(pod: PodResults | undefined, snapshot: SnapshotResults | undefined): Verdict[] {
  const out: Verdict[] = [];
  if (pod) {
    const quota = `${pod.limits.cpuMillis}m CPU`;
    const scale = pod.customers >= 1_000_000 ? "" : ` (${fmt(pod.customers)} customers, not 1M)`;
    if (pod.skipped) out.push({ what: `Pod ${quota}: Check p99 during cold start / burst vs at rest`, target: "≤ 2×", measured: "not measured", met: undefined, note: ` (skipped: ${pod.skipped})` });
    const at = pod.atRest?.checks.latency.p99_us ?? NaN;
    const row = (what: string, p: PodPhase | undefined): void => {
      if (!p) return;
      out.push({ what: `Pod ${quota}: Check p99 ${what} vs at rest`, target: "≤ 2×", measured: `${p.ratio.p99}× (${us(p.checks.latency.p99_us)} vs ${us(at)})`, met: p.ratio.p99 <= 2, note: scale });
    };
    row("during a cold start (replay)", pod.coldReplay);
    row("during a cold start (snapshot)", pod.coldSnapshot);
    row(`during a ${fmt(pod.burst?.rate ?? NaN)}/s burst`, pod.burst);
  }
  if (snapshot && snapshot.customers >= TEN_MILLION) {
    out.push({
      what: "Cold start from a snapshot at 10M, full mode",
      target: "≤ 60 s to ready",
      measured: `${fmt(snapshot.restore.readyMs / 1000, 1)} s (replay ${fmt(snapshot.replay.readyMs / 1000, 1)} s)`,
      met: snapshot.restore.readyMs <= 60_000,
    });
    const rss = Math.max(snapshot.restore.rssAtRestBytes, snapshot.replay.rssAtRestBytes);
    out.push({
      what: "Sidecar RSS at rest at 10M, full mode (restored / replayed)",
      target: "≤ 150 MB",
      measured: `${fmt(snapshot.restore.rssAtRestBytes / MB)} / ${fmt(snapshot.replay.rssAtRestBytes / MB)} MiB`,
      met: rss <= 150e6,
    });
  }
  return out;
}

const checks = (w: Window): string[] => [us(w.latency.p50_us), us(w.latency.p99_us), us(w.latency.p999_us), us(w.latency.max_us), fmt(w.latency.count), w.errors ? fmt(w.errors) : ""];
const throttled = (p: PodPhase): string => `${fmt(p.throttling.throttledPeriods)}/${fmt(p.throttling.periods)}, ${fmt(p.throttling.throttledMs)} ms`;

export function renderPod(pod: PodResults | undefined, herd: HerdResults | undefined): string[] {
  const parts: string[] = [];
  if (pod) {
    const title = `7. Pod profile: sidecar and echo each in a control group of ${pod.limits.cpuMillis}m CPU and ${fmt(pod.limits.memoryBytes / MB)} MiB (${fmt(pod.customers)} customers), checks at ${fmt(pod.rate)}/s from a client without quota`;
    if (pod.skipped) parts.push(`${title}\n  skipped: ${pod.skipped}`);
    else {
      const rows: string[][] = [];
      const add = (name: string, p: PodPhase | undefined, vs: string): void => {
        if (p) rows.push([name, ...checks(p.checks), fmt(p.cpuCores, 2), throttled(p), vs]);
      };
      add("sidecar at rest", pod.atRest, "");
      add(`cold start, replaying the stream (ready in ${fmt((pod.coldReplay?.readyMs ?? NaN) / 1000, 2)} s)`, pod.coldReplay, pod.coldReplay ? `${pod.coldReplay.ratio.p50}× / ${pod.coldReplay.ratio.p99}×` : "");
      add(`cold start from the snapshot (ready in ${fmt((pod.coldSnapshot?.readyMs ?? NaN) / 1000, 2)} s)`, pod.coldSnapshot, pod.coldSnapshot ? `${pod.coldSnapshot.ratio.p50}× / ${pod.coldSnapshot.ratio.p99}×` : "");
      add(`burst of ${fmt(pod.burst?.count ?? NaN)} updates at ${fmt(pod.burst?.rate ?? NaN)}/s (applied in ${fmt(pod.burst?.appliedSeconds ?? NaN, 2)} s)`, pod.burst, pod.burst ? `${pod.burst.ratio.p50}× / ${pod.burst.ratio.p99}×` : "");
      add("bare grpc-js echo at rest (floor)", pod.echo, pod.echo ? `sidecar/echo ${pod.echo.ratio.p50}× / ${pod.echo.ratio.p99}×` : "");
      parts.push(table(`${title}; cgroup ${pod.cgroup ?? "?"}`, ["phase", "p50", "p99", "p99.9", "max", "checks", "errors", "server CPU (cores)", "throttled periods, time", "p50 / p99 vs at rest"], rows));
      if (pod.memory) parts.push(`Sidecar group memory peak (RSS + page cache): ${pod.memory.peakBytes === undefined ? "n/a" : `${fmt(pod.memory.peakBytes / MB)} MiB`}; OOM kills: ${pod.memory.oomKills}`);
    }
  }
  if (herd) {
    const row = (name: string, h: HerdResults["replay"]): string[] => [
      name,
      `${fmt(h.allReadyMs / 1000, 2)} s`,
      `${fmt(h.medianReadyMs / 1000, 2)} s`,
      `${fmt(h.serverOutBytes / MB, 1)} MiB`,
      `${fmt(h.perSidecarBytes.mean / MB, 2)} MiB`,
      `${fmt(h.perSidecarBytes.max / MB, 2)} MiB`,
    ];
    parts.push(
      table(
        `8. Herd: ${herd.size} cold sidecars at once against one nats-server (${fmt(herd.customers)} customers; stream ${fmt(herd.streamBytes / MB, 1)} MiB, snapshot object ${fmt(herd.snapshotBytes / MB, 1)} MiB); bytes from nats-server's /varz and /connz`,
        ["", "all ready", "median ready", "nats-server sent (all)", "per sidecar (mean)", "per sidecar (max)"],
        [row("replaying the stream", herd.replay), row("from the snapshot", herd.snapshot)],
      ),
    );
  }
  return parts;
}
