// Renders docs generated from code: `npm run docs` (builds first).
import { writeFileSync } from "node:fs";
import { renderAccessStates } from "../dist/policy/index.js";

writeFileSync(new URL("../docs/access-states.md", import.meta.url), renderAccessStates());
console.log("wrote docs/access-states.md");
