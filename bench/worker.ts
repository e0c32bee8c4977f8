/**
 * Entry point of every benchmark child process: `node bench/dist/worker.js <role>`. The role
 * module answers the parent's requests over IPC (see ipc.ts).
 */
const role = process.argv[2] ?? "";
if (!/^[a-z]+$/.test(role)) throw new Error(`bad role "${role}"`);
const mod = (await import(`./roles/${role}.js`)) as { start: () => void };
mod.start();
