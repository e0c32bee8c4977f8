import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderConfiguration } from "../../src/cli/reference.js";
import { writerOptionSpec } from "../../src/writer/index.js";
import { sidecarOptionSpec } from "../../src/sidecar/index.js";

const doc = (name: string): string => readFileSync(new URL(`../../docs/${name}`, import.meta.url), "utf8");

describe("docs generated from code (run `npm run docs` when this fails)", () => {
  it("configuration.md lists every writer and sidecar option", () => {
    const text = doc("configuration.md");
    expect(text).toBe(renderConfiguration());
    for (const key of [...Object.keys(writerOptionSpec), ...Object.keys(sidecarOptionSpec)]) {
      expect(text).toContain(`PROOFGATE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`);
    }
  });
});
