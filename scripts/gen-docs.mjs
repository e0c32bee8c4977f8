// Renders the docs that are generated from code: `npm run docs` (builds first).
import { writeFileSync } from "node:fs";
import { renderAccessStates } from "../dist/policy/index.js";
import { renderConfiguration } from "../dist/cli/reference.js";

for (const [file, text] of [
  ["access-states.md", renderAccessStates()],
  ["configuration.md", renderConfiguration()],
]) {
  writeFileSync(new URL(`../docs/${file}`, import.meta.url), text);
  console.log(`wrote docs/${file}`);
}
