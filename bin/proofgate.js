#!/usr/bin/env node
// Runs the compiled CLI (`npm run build` first; `npm start` and `npm test` do it for you).
import { main } from "../dist/cli/main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`proofgate: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
