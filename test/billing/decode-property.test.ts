import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { decodeEvent, decodeEventList, describeEvent, encodeEventJson, validateEvent } from "../../src/billing/index.js";
import { InvalidArgumentError } from "../../src/errors/index.js";
import { BillingEvent } from "../../src/gen/proofgate/v1/billing.js";
import { FIELD_REASON, NOW, mutatedBytes, mutatedJson, validEvent } from "./arbitraries.js";

/**
 * The NATS decoders (protobuf and JSON) and Publish's per-event decoding, over arbitrary input:
 * every input either becomes an event the writer can store, or is refused with an
 * InvalidArgumentError whose message starts with the field it is about. Nothing else may come out
 * (an exception from deep inside a decoder, an event that fails later when re-encoded).
 */
type Verdict = { readonly ok: true; readonly event: BillingEvent } | { readonly ok: false; readonly reason: string };

/** What the writer does with a payload from NATS before applying it: decode, then validate. */
function verdict(payload: Uint8Array, contentType: string | undefined): Verdict {
  let event: BillingEvent;
  try {
    event = decodeEvent(payload, contentType);
    validateEvent(event, undefined, { now: NOW, maxSkewMs: 300_000 });
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw new Error(`not an InvalidArgumentError: ${String(err)}`, { cause: err });
    return { ok: false, reason: err.message };
  }
  return { ok: true, event };
}

/** An accepted event can be stored and described, and survives its own encoding. */
function expectStorable(e: BillingEvent): void {
  const bytes = BillingEvent.encode(e).finish();
  expect(BillingEvent.decode(bytes)).toEqual(e);
  expect(typeof describeEvent(e)).toBe("string");
}

function expectDecided(v: Verdict): void {
  if (v.ok) expectStorable(v.event);
  else expect(v.reason).toMatch(FIELD_REASON);
}

describe("the NATS decoders over arbitrary input", () => {
  test("valid events round-trip through protobuf and JSON and are accepted", () => {
    fc.assert(
      fc.property(validEvent, (e) => {
        const p = verdict(BillingEvent.encode(e).finish(), undefined);
        const j = verdict(Buffer.from(encodeEventJson(e)), "application/json");
        expect(p).toEqual({ ok: true, event: e });
        expect(j).toEqual({ ok: true, event: e });
      }),
    );
  });

  test("arbitrary bytes as protobuf: applied or refused naming the field", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => expectDecided(verdict(b, undefined))), { numRuns: 2_000 });
  });

  test("valid events with bytes overwritten, inserted or cut: applied or refused naming the field", () => {
    fc.assert(fc.property(mutatedBytes, (b) => expectDecided(verdict(b, undefined))), { numRuns: 2_000 });
  });

  test("arbitrary JSON: applied or refused naming the field", () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => expectDecided(verdict(Buffer.from(JSON.stringify(v)), "application/json"))), { numRuns: 1_000 });
  });

  test("valid events' JSON with a field replaced by arbitrary JSON: applied or refused naming the field", () => {
    fc.assert(fc.property(mutatedJson, (s) => expectDecided(verdict(Buffer.from(s), "application/json"))), { numRuns: 2_000 });
  });

  test("arbitrary bytes as JSON (invalid UTF-8 included): refused naming the field", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), (b) => expectDecided(verdict(b, "application/json"))), { numRuns: 500 });
  });

  test("Publish: each event of a request is decoded on its own, and valid ones always decode", () => {
    const item = fc.oneof(validEvent.map((e) => ({ valid: true, bytes: BillingEvent.encode(e).finish() })), mutatedBytes.map((bytes) => ({ valid: false, bytes })), fc.uint8Array({ maxLength: 60 }).map((bytes) => ({ valid: false, bytes })));
    fc.assert(
      fc.property(fc.array(item, { maxLength: 8 }), (items) => {
        const request = Buffer.concat(items.flatMap((i) => [Uint8Array.of(0x0a), varint(i.bytes.length), i.bytes]));
        const decoded = decodeEventList(request, 1, "events");
        expect(decoded.length).toBe(items.length);
        decoded.forEach((d, i) => {
          if (items[i]?.valid) expect(d.event).toEqual(BillingEvent.decode(items[i].bytes));
          if (d.error) expect(d.error.message).toMatch(FIELD_REASON);
          else expect(d.event).toBeDefined();
        });
      }),
      { numRuns: 1_000 },
    );
  });
});

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Uint8Array.from(out);
}
