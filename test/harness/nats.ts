/**
 * A real `nats-server -js` for tests: ephemeral port, its own temp store, log shown only on
 * failure (`log()`). The same class runs NATS for `proofgate dev`.
 */
export { NatsServer } from "../../src/dev/nats-server.js";
