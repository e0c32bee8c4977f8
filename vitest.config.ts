import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/harness/setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests spawn nats-server and services; two cores do not like many at once.
    maxWorkers: 2,
  },
});
