import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Catalog } from "../gen/proofgate/v1/catalog.js";
import { StateRecord } from "../gen/proofgate/v1/document.js";
import { CATALOG_SUBJECT, tokenOfSubject } from "./subjects.js";

/**
 * The one home of the `PROOFGATE_STATE` payload (`StateRecord`, see docs/replication.md): the
 * writer encodes with the `encode…` functions, sidecars, snapshots, bench and tests read with
 * `decodeStateRecord`. Both directions are checked against each other and against the generated
 * encoder by test/replication/state-record.test.ts.
 */

/**
 * `StateRecord{document}` around already-encoded `AccessDocument` bytes: tag (field 1,
 * length-delimited), varint length, then the bytes. Built by hand so the published document is
 * byte for byte the stored one, with no decode/encode round trip.
 */
export function encodeDocumentRecord(document: Uint8Array): Uint8Array {
  const len: number[] = [];
  let n = document.length;
  while (n > 0x7f) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  const out = new Uint8Array(1 + len.length + document.length);
  out[0] = DOCUMENT_TAG;
  out.set(len, 1);
  out.set(document, 1 + len.length);
  return out;
}

/** The tombstone of an erased customer (it names no customer: the subject carries the token). */
export function encodeErasedRecord(erasedAt: Date): Uint8Array {
  return StateRecord.encode({ record: { $case: "erased", value: { erasedAt } } }).finish();
}

export function encodeCatalogRecord(catalog: Catalog): Uint8Array {
  return StateRecord.encode({ record: { $case: "catalog", value: catalog } }).finish();
}

/**
 * A `StateRecord` read just far enough to apply it. Documents are kept as the exact bytes of
 * their `AccessDocument` encoding (sliced out of the record, not re-encoded) so applying one costs
 * a subject check and a read of its first field, not a full decode: a cold bootstrap of a million
 * customers is bound by NATS, not by protobuf.
 */
export type StateRecordView =
  | { readonly kind: "document"; readonly token: string; readonly customerId: string; readonly document: Buffer }
  | { readonly kind: "erased"; readonly token: string }
  | { readonly kind: "catalog"; readonly catalog: Catalog; readonly bytes: Buffer }
  | { readonly kind: "invalid"; readonly problem: string };

const DOCUMENT_TAG = (1 << 3) | WireType.LengthDelimited;
const ERASED_TAG = (2 << 3) | WireType.LengthDelimited;
const CATALOG_TAG = (3 << 3) | WireType.LengthDelimited;
const CUSTOMER_ID_TAG = (1 << 3) | WireType.LengthDelimited;

const WIRE_TYPES = [WireType.Varint, WireType.Bit64, WireType.LengthDelimited, WireType.StartGroup, WireType.EndGroup, WireType.Bit32] as const;

function wireTypeOf(tag: number): WireType {
  const w = WIRE_TYPES[tag & 7];
  if (w === undefined) throw new Error(`invalid wire type ${tag & 7}`);
  return w;
}

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** Never throws: anything undecodable is `invalid` with the reason, so one bad message cannot wedge a replica. */
export function decodeStateRecord(subject: string, data: Uint8Array): StateRecordView {
  try {
    let tag = 0;
    let body: Uint8Array | undefined;
    const reader = new BinaryReader(data);
    while (reader.pos < reader.len) {
      const t = reader.uint32();
      if (t === DOCUMENT_TAG || t === ERASED_TAG || t === CATALOG_TAG) {
        // A oneof: the last member on the wire wins, as in a full decode.
        tag = t;
        body = reader.bytes();
      } else {
        reader.skip(wireTypeOf(t), t >>> 3);
      }
    }
    if (subject === CATALOG_SUBJECT) {
      if (tag !== CATALOG_TAG || !body) return { kind: "invalid", problem: "catalog subject without a catalog record" };
      return { kind: "catalog", catalog: Catalog.decode(body), bytes: Buffer.from(body) };
    }
    const token = tokenOfSubject(subject);
    if (token === undefined || token === "") return { kind: "invalid", problem: "unexpected subject" };
    if (tag === ERASED_TAG) return { kind: "erased", token };
    if (tag !== DOCUMENT_TAG || !body) return { kind: "invalid", problem: "customer subject without a document or tombstone" };
    const customerId = readCustomerId(body);
    if (!customerId) return { kind: "invalid", problem: "document without customer_id" };
    return { kind: "document", token, customerId, document: asBuffer(body) };
  } catch (err) {
    return { kind: "invalid", problem: `undecodable record: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/**
 * Field 1 of an `AccessDocument` encoding, without decoding the rest. Encoders write it once and
 * first, so this usually reads a single field. Throws on a malformed encoding.
 */
export function readCustomerId(document: Uint8Array): string | undefined {
  const reader = new BinaryReader(document);
  while (reader.pos < reader.len) {
    const t = reader.uint32();
    if (t === CUSTOMER_ID_TAG) return reader.string();
    reader.skip(wireTypeOf(t), t >>> 3);
  }
  return undefined;
}

/**
 * Whether an `AccessDocument` encoding is this customer's. The common case (field 1 first, an id
 * under 128 bytes) is a byte comparison; anything else falls back to reading the field.
 */
export function documentIsFor(document: Buffer, customerId: string): boolean {
  const len = document[1];
  if (document[0] === CUSTOMER_ID_TAG && len !== undefined && len < 0x80 && document.length >= 2 + len) {
    return document.toString("utf8", 2, 2 + len) === customerId;
  }
  return readCustomerId(document) === customerId;
}
