import { afterAll } from "vitest";
import { disposeTempDirs } from "./tmp.js";

// Registered before each file's own hooks, so it runs after them (hooks unwind like a stack).
afterAll(disposeTempDirs);
