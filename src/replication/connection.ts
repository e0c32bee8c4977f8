import { readFileSync } from "node:fs";
import { credsAuthenticator, type ConnectionOptions } from "nats";
import { string, type OptionValues } from "../config/options.js";

/** How writer and sidecar reach NATS: the same options, the same meaning, in one place. */
export const natsOptionSpec = {
  natsUrl: string("NATS server URL(s), comma separated", "nats://127.0.0.1:4222"),
  natsCreds: string("NATS credentials file (.creds: JWT and NKey seed)"),
  natsUser: string("NATS user name (with --nats-password)"),
  natsPassword: string("NATS password"),
  natsToken: string("NATS authentication token"),
};

export type NatsOptions = OptionValues<typeof natsOptionSpec>;

/** The NATS URL(s) as they may be logged: any user:password@ (or token@) is replaced by `***@`. */
export function redactNatsUrl(url: string): string {
  return url.replace(/(^|,|\/\/)\s*[^/@,\s]+@/g, "$1***@");
}

/** Connection options that reconnect forever: a service outlives any NATS outage. */
export function natsConnectionOptions(o: NatsOptions, name: string, reconnectTimeWait: number): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: o.natsUrl.split(",").map((s) => s.trim()).filter(Boolean),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait,
    pingInterval: 10_000,
    maxPingOut: 2,
  };
  if (o.natsCreds) opts.authenticator = credsAuthenticator(new Uint8Array(readFileSync(o.natsCreds)));
  if (o.natsUser) {
    opts.user = o.natsUser;
    opts.pass = o.natsPassword;
  }
  if (o.natsToken) opts.token = o.natsToken;
  return opts;
}
