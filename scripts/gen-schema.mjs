// Generates schema/billing-event.schema.json, the JSON Schema of proofgate.v1.BillingEvent in
// canonical proto3 JSON, from the proto itself: `buf build` produces a FileDescriptorSet (with
// comments), @bufbuild/protobuf reads it, and every property, type, enum and description below
// comes from the descriptors. Never edit the schema by hand; change the proto and rerun.
//
//   node scripts/gen-schema.mjs            write the schema
//   node scripts/gen-schema.mjs --check    exit 1 if the committed schema is not what the proto gives
//   node scripts/gen-schema.mjs --stdout   print it
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createFileRegistry, fromBinary, ScalarType } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "schema/billing-event.schema.json");
const ROOT_MESSAGE = "proofgate.v1.BillingEvent";

/** `buf build` → FileDescriptorSet bytes (imports and source info included). */
function buildDescriptors() {
  const dir = mkdtempSync(join(tmpdir(), "proofgate-schema-"));
  try {
    const out = join(dir, "proofgate.binpb");
    execFileSync(join(ROOT, "node_modules/.bin/buf"), ["build", "-o", out], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Source-info path of a message, field, enum or enum value (descriptor.proto field numbers). */
function pathOf(desc) {
  switch (desc.kind) {
    case "message": {
      const parent = desc.parent;
      return parent ? [...pathOf(parent), 3, parent.proto.nestedType.indexOf(desc.proto)] : [4, desc.file.proto.messageType.indexOf(desc.proto)];
    }
    case "enum": {
      const parent = desc.parent;
      return parent ? [...pathOf(parent), 4, parent.proto.enumType.indexOf(desc.proto)] : [5, desc.file.proto.enumType.indexOf(desc.proto)];
    }
    case "field":
      return [...pathOf(desc.parent), 2, desc.parent.proto.field.indexOf(desc.proto)];
    case "enum_value":
      return [...pathOf(desc.parent), 2, desc.parent.proto.value.indexOf(desc.proto)];
    default:
      throw new Error(`no path for ${desc.kind}`);
  }
}

/** The leading comment of a descriptor, as one paragraph of text. */
function comment(desc, file) {
  const path = pathOf(desc).join(",");
  const loc = file.proto.sourceCodeInfo?.location.find((l) => l.path.join(",") === path);
  const text = (loc?.leadingComments ?? "").trim();
  return text ? text.split("\n").map((l) => l.trim()).join(" ") : undefined;
}

/**
 * Unconditionally required, as the proto's comments say it: "required" closing a clause
 * ("Idempotency key, required.", "Required.", "required for every kind."). "required when
 * ACTIVE" and "required for SUCCEEDED, …" are conditions the writer checks; they stay in the
 * description.
 */
function isRequired(text) {
  return /(^|[,.]\s*)required(\s+for every kind)?\s*(\.|$)/i.test(text ?? "");
}

const INT64 = new Set([ScalarType.INT64, ScalarType.SINT64, ScalarType.SFIXED64]);
const UINT64 = new Set([ScalarType.UINT64, ScalarType.FIXED64]);
const INT32 = new Set([ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32]);
const UINT32 = new Set([ScalarType.UINT32, ScalarType.FIXED32]);

/** Canonical proto3 JSON of a scalar. 64-bit integers: a decimal string, or a number (parsers take both). */
function scalarSchema(type) {
  if (type === ScalarType.STRING) return { type: "string" };
  if (type === ScalarType.BOOL) return { type: "boolean" };
  if (type === ScalarType.BYTES) return { type: "string", contentEncoding: "base64" };
  if (type === ScalarType.DOUBLE || type === ScalarType.FLOAT) return { type: "number" };
  if (INT32.has(type)) return { type: "integer", minimum: -2147483648, maximum: 2147483647 };
  if (UINT32.has(type)) return { type: "integer", minimum: 0, maximum: 4294967295 };
  if (UINT64.has(type)) return { anyOf: [{ type: "string", pattern: "^[0-9]+$" }, { type: "integer", minimum: 0 }] };
  if (INT64.has(type)) return { anyOf: [{ type: "string", pattern: "^-?[0-9]+$" }, { type: "integer" }] };
  throw new Error(`scalar type ${type} not handled`);
}

/** Well-known types with their own JSON form. */
const WELL_KNOWN = {
  "google.protobuf.Timestamp": {
    type: "string",
    format: "date-time",
    pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$",
    description: "An RFC 3339 instant, e.g. \"2026-11-01T09:30:00Z\".",
  },
};

function generate(bytes) {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  const root = registry.getMessage(ROOT_MESSAGE);
  if (!root) throw new Error(`${ROOT_MESSAGE} not found in the descriptors`);
  const defs = {};

  const enumRef = (e, required) => {
    const name = required ? `${e.name}.Set` : e.name;
    if (!defs[name]) {
      // Zero (_UNSPECIFIED) means "not set": listed only where the field may be absent.
      const values = e.values.filter((v) => !required || v.number !== 0);
      defs[name] = {
        type: "string",
        enum: values.map((v) => v.name),
        description: [
          comment(e, e.file),
          required ? `Required here, so the zero value ${e.values.find((v) => v.number === 0)?.name ?? "0"} (not set) is not accepted.` : undefined,
          ...values.map((v) => (comment(v, e.file) ? `${v.name}: ${comment(v, e.file)}` : undefined)),
        ]
          .filter(Boolean)
          .join(" "),
      };
    }
    return { $ref: `#/$defs/${name}` };
  };

  const fieldSchema = (f, required) => {
    const one = (() => {
      switch (f.fieldKind) {
        case "scalar":
          return scalarSchema(f.scalar);
        case "enum":
          return enumRef(f.enum, required);
        case "message":
          return messageRef(f.message);
        case "list":
          if (f.listKind === "scalar") return { type: "array", items: scalarSchema(f.scalar) };
          if (f.listKind === "enum") return { type: "array", items: enumRef(f.enum, true) };
          return { type: "array", items: messageRef(f.message) };
        default:
          throw new Error(`field kind ${f.fieldKind} not handled (${f.parent.typeName}.${f.name})`);
      }
    })();
    const text = comment(f, f.parent.file);
    if (!text) return one;
    return one.$ref ? { allOf: [one], description: text } : { ...one, description: [text, one.description].filter(Boolean).join(" ") };
  };

  const messageRef = (m) => {
    if (WELL_KNOWN[m.typeName]) return { ...WELL_KNOWN[m.typeName] };
    if (!defs[m.name]) defs[m.name] = messageSchema(m);
    return { $ref: `#/$defs/${m.name}` };
  };

  const messageSchema = (m) => {
    defs[m.name] = {}; // placeholder for recursion
    const properties = {};
    const required = [];
    for (const f of m.fields) {
      const req = !f.oneof && isRequired(comment(f, m.file));
      properties[f.jsonName] = fieldSchema(f, req);
      if (req) required.push(f.jsonName);
    }
    const out = {
      type: "object",
      description: comment(m, m.file),
      properties,
      ...(required.length ? { required } : {}),
      additionalProperties: false,
    };
    // A oneof: exactly one of its members, and no two (proto3 JSON rejects a second member).
    const oneofs = m.oneofs.filter((o) => !o.fields.every((f) => f.proto.proto3Optional));
    if (oneofs.length) {
      out.allOf = oneofs.map((o) => ({
        description: `Exactly one of: ${o.fields.map((f) => f.jsonName).join(", ")} (oneof ${o.name}).`,
        oneOf: o.fields.map((f) => ({ required: [f.jsonName] })),
      }));
    }
    return out;
  };

  const body = messageSchema(root);
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://github.com/proofgate/proofgate/schema/billing-event.schema.json",
    title: root.typeName,
    $comment:
      "Generated by scripts/gen-schema.mjs from proto/proofgate/v1/billing.proto; do not edit. Canonical proto3 JSON: lowerCamel field names (parsers also accept the proto names), enums as strings, Timestamps as RFC 3339, 64-bit integers as strings or numbers. Conditions the writer also checks (e.g. a SUCCEEDED payment needs a period and a plan or add-on) are in the descriptions.",
    ...body,
    $defs: Object.fromEntries(Object.entries(defs).filter(([name]) => name !== root.name).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
  };
}

const text = JSON.stringify(generate(buildDescriptors()), null, 2) + "\n";
const mode = process.argv[2];
if (mode === "--stdout") {
  process.stdout.write(text);
} else if (mode === "--check") {
  let committed = "";
  try {
    committed = readFileSync(OUT, "utf8");
  } catch {
    // missing: differs
  }
  if (committed !== text) {
    console.error("schema/billing-event.schema.json is not what proto/proofgate/v1/billing.proto gives: run `node scripts/gen-schema.mjs`");
    process.exit(1);
  }
  console.log("schema/billing-event.schema.json is up to date");
} else {
  mkdirSync(join(ROOT, "schema"), { recursive: true });
  writeFileSync(OUT, text);
  console.log("wrote schema/billing-event.schema.json");
}
