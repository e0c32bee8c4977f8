/**
 * A small JSON Schema (2020-12) validator: the subset schema/billing-event.schema.json uses
 * (type, properties, required, additionalProperties, enum, pattern, minimum, maximum, items,
 * $ref into $defs, allOf, anyOf, oneOf, format date-time). Returns every error with its path.
 */
export type Schema = Record<string, unknown>;

export function validate(schema: Schema, value: unknown): string[] {
  const errors: string[] = [];
  check(schema, schema, value, "$", errors);
  return errors;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i;

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function check(root: Schema, s: Schema, v: unknown, at: string, errors: string[]): void {
  const ref = s["$ref"];
  if (typeof ref === "string") {
    const m = /^#\/\$defs\/(.+)$/.exec(ref);
    const target = m?.[1] ? (root["$defs"] as Record<string, Schema> | undefined)?.[m[1]] : undefined;
    if (!target) {
      errors.push(`${at}: unresolvable $ref ${ref}`);
      return;
    }
    check(root, target, v, at, errors);
  }
  const type = s["type"];
  if (typeof type === "string") {
    const t = typeOf(v);
    if (!(t === type || (type === "number" && t === "integer"))) {
      errors.push(`${at}: expected ${type}, got ${t}`);
      return;
    }
  }
  const en = s["enum"];
  if (Array.isArray(en) && !en.includes(v)) errors.push(`${at}: ${JSON.stringify(v)} is not one of ${en.join(", ")}`);
  if (typeof v === "string") {
    const pattern = s["pattern"];
    if (typeof pattern === "string" && !new RegExp(pattern, "u").test(v)) errors.push(`${at}: "${v}" does not match ${pattern}`);
    if (s["format"] === "date-time" && (!RFC3339.test(v) || Number.isNaN(Date.parse(v)))) errors.push(`${at}: "${v}" is not an RFC 3339 date-time`);
  }
  if (typeof v === "number") {
    const min = s["minimum"];
    const max = s["maximum"];
    if (typeof min === "number" && v < min) errors.push(`${at}: ${v} < ${min}`);
    if (typeof max === "number" && v > max) errors.push(`${at}: ${v} > ${max}`);
  }
  if (Array.isArray(v) && s["items"]) v.forEach((item, i) => check(root, s["items"] as Schema, item, `${at}[${i}]`, errors));
  if (typeOf(v) === "object") {
    const obj = v as Record<string, unknown>;
    const props = (s["properties"] ?? {}) as Record<string, Schema>;
    for (const r of (s["required"] ?? []) as string[]) if (!(r in obj)) errors.push(`${at}: missing required property "${r}"`);
    for (const [k, val] of Object.entries(obj)) {
      const p = props[k];
      if (p) check(root, p, val, `${at}.${k}`, errors);
      else if (s["additionalProperties"] === false) errors.push(`${at}: unknown property "${k}"`);
    }
  }
  for (const sub of (s["allOf"] ?? []) as Schema[]) check(root, sub, v, at, errors);
  const anyOf = s["anyOf"] as Schema[] | undefined;
  if (anyOf && !anyOf.some((sub) => validateAt(root, sub, v))) errors.push(`${at}: matches none of anyOf`);
  const oneOf = s["oneOf"] as Schema[] | undefined;
  if (oneOf) {
    const n = oneOf.filter((sub) => validateAt(root, sub, v)).length;
    const why = typeof s["description"] === "string" ? `: ${s["description"]}` : "";
    if (n !== 1) errors.push(`${at}: matches ${n} of oneOf (exactly one required${why})`);
  }
}

function validateAt(root: Schema, s: Schema, v: unknown): boolean {
  const errors: string[] = [];
  check(root, s, v, "$", errors);
  return errors.length === 0;
}
