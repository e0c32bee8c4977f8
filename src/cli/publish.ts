import { readFileSync } from "node:fs";
import { connect, headers } from "nats";
import { BillingEvent } from "../gen/proofgate/v1/billing.js";
import { IngestResult, PublishResponse } from "../gen/proofgate/v1/ingest.js";
import { decodeEvent, enumLabel, validateEvent } from "../billing/index.js";
import { errorMessage } from "../errors/index.js";
import { DEFAULT_NATS, DEFAULT_WRITER, call, natsUrl, redactUrl, writerAddress, writerClients } from "./client.js";
import { parseCommand } from "./args.js";

export const summary = "send billing events (JSON lines) to the writer or to NATS";

const USAGE = `usage: proofgate publish [FILE] [--writer HOST:PORT | --nats [--nats-url URL] [--subject S]] [--json]

Reads billing events, one canonical proto3 JSON object per line (FILE, or standard input when
FILE is absent or "-"), checks every line first, and sends nothing if any line is invalid.
By default calls IngestService.Publish on the writer (PROOFGATE_WRITER_ADDRESS, else the running
\`proofgate dev\`, else ${DEFAULT_WRITER}) and prints each event's result and the revision to pass
to \`proofgate check --min-revision\`. With --nats (or --nats-url), publishes each event to
JetStream on --subject (default proofgate.billing.cli) as a billing system would, at --nats-url,
else PROOFGATE_NATS_URL, else the running \`proofgate dev\`'s NATS, else ${DEFAULT_NATS}.`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals, help } = parseCommand(
    argv,
    { writer: { type: "string" }, nats: { type: "boolean" }, "nats-url": { type: "string" }, subject: { type: "string" }, json: { type: "boolean" } },
    USAGE,
  );
  if (help) return 0;
  const file = positionals[0];
  const text = !file || file === "-" ? readFileSync(0, "utf8") : readFileSync(file, "utf8");
  const events = parseLines(text);
  if (v.nats || v["nats-url"]) {
    const url = natsUrl(v["nats-url"]);
    const nc = await connect({ servers: url, name: "proofgate-publish" }).catch((err: unknown) => {
      throw new Error(
        `cannot reach NATS at ${redactUrl(url)} (${errorMessage(err)}); start \`proofgate dev\`, or pass --nats-url / set PROOFGATE_NATS_URL`,
      );
    });
    try {
      const js = nc.jetstream();
      const subject = v.subject ?? "proofgate.billing.cli";
      for (const e of events) {
        const h = headers();
        h.set("Content-Type", "application/json");
        const ack = await js.publish(subject, JSON.stringify(BillingEvent.toJSON(e)), { headers: h, msgID: e.eventId });
        console.log(`${e.eventId}  ${ack.duplicate ? "duplicate (already in the stream)" : `queued as billing seq ${ack.seq}`}`);
      }
    } finally {
      await nc.drain();
    }
    return 0;
  }
  const { ingest, admin } = writerClients(writerAddress(v.writer));
  try {
    const res = await call<PublishResponse>((md, o, cb) => ingest.publish({ events }, md, o, cb));
    if (v.json) console.log(JSON.stringify(PublishResponse.toJSON(res)));
    else {
      for (const r of res.results) console.log(`${r.eventId}  ${enumLabel(IngestResult, r.result, "INGEST_RESULT_")}${r.reason ? `: ${r.reason}` : ""}`);
      console.log(`revision ${res.revision}`);
    }
    return res.results.some((r) => r.result === IngestResult.INGEST_RESULT_REJECTED) ? 1 : 0;
  } finally {
    ingest.close();
    admin.close();
  }
}

/** Every line must decode and validate; errors name the line and the field. */
export function parseLines(text: string): BillingEvent[] {
  const events: BillingEvent[] = [];
  const errors: string[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const e = decodeEvent(Buffer.from(line), "application/json");
      validateEvent(e);
      events.push(e);
    } catch (err) {
      errors.push(`line ${i + 1}: ${errorMessage(err)}`);
    }
  });
  if (errors.length > 0) throw new Error(`nothing was sent; fix these lines:\n  ${errors.join("\n  ")}`);
  if (events.length === 0) throw new Error("no events in the input");
  return events;
}
