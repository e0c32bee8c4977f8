// Test-only entry point: `proofgate writer` with the crash hooks a fault test asks for through
// its environment. The production binary has no such hooks; this module is never shipped.
import { run } from "../../dist/cli/writer.js";

const crash = () => process.kill(process.pid, "SIGKILL");
const hooks = {
  ...(process.env.PROOFGATE_TEST_CRASH_AFTER_COMMIT === "1" ? { afterEventCommit: crash } : {}),
  ...(process.env.PROOFGATE_TEST_CRASH_AFTER_PUBLISH === "1" ? { afterPublish: crash } : {}),
};
process.exitCode = await run(process.argv.slice(2), { hooks });
