import { closeSync, fstatSync, openSync, readSync, watch, type FSWatcher } from "node:fs";
import { dirname, resolve } from "node:path";
import { InvalidArgumentError, errorMessage } from "../../errors/index.js";
import type { Logger } from "../../observability/logger.js";
import { createIdentity, type Identity } from "./identity.js";
import type { ExtAuthzMetrics } from "./metrics.js";
import { parseRulesText, type RulesConfig } from "./rules.js";

/** Largest rules or JWKS file read. */
export const MAX_FILE_BYTES = 1024 * 1024;
/** Files are re-read this often even without a watch event (some volumes do not report changes). */
const POLL_MS = 5_000;
/** Several events arrive for one change (a ConfigMap update swaps two symlinks). */
const SETTLE_MS = 50;

export interface LoadedRules extends RulesConfig {
  readonly verify: Identity;
}

function readBounded(path: string, what: string): string {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw new InvalidArgumentError(what, `cannot read ${path}: ${errorMessage(err)}`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_FILE_BYTES) throw new InvalidArgumentError(what, `${path} is ${size} bytes, more than ${MAX_FILE_BYTES}`);
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.toString("utf8", 0, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * The rules file and the JWKS file it names, loaded, validated and kept current: a change to
 * either (seen by watching their directories, where a Kubernetes ConfigMap update swaps a
 * symlink, or by a poll every 5 s) is applied whole if valid; otherwise the error is logged and
 * the previous rules stay in force. Unchanged content is not re-applied.
 */
export class RulesFile {
  private rules: LoadedRules;
  private lastContent: string;
  /** The JWKS file the last loaded or refused rules named, for the cheap "did anything change" read. */
  private lastJwksPath: string | undefined;
  private watchers: FSWatcher[] = [];
  private watchedDirs: string[] = [];
  private settle: NodeJS.Timeout | undefined;
  private readonly poll: NodeJS.Timeout;

  /** Throws InvalidArgumentError (naming the rule and field) when the file is not valid. */
  constructor(
    readonly path: string,
    private readonly logger: Logger,
    private readonly metrics: ExtAuthzMetrics,
  ) {
    const { rules, content, jwksPath } = this.load();
    this.rules = rules;
    this.lastContent = content;
    this.lastJwksPath = jwksPath;
    this.metrics.rules.set(rules.rules.length);
    this.metrics.fileValid.set(1);
    this.watchDirs(jwksPath);
    this.poll = setInterval(() => this.reload(), POLL_MS);
    this.poll.unref();
    logger.info({ path, rules: rules.rules.length, default: rules.defaultAction, identity: rules.identity.kind }, "ext_authz rules loaded");
  }

  get current(): LoadedRules {
    return this.rules;
  }

  /** Re-reads both files; applies them if they changed and are valid. Returns whether new rules are in force. */
  reload(): boolean {
    if (this.unchanged()) return false;
    let loaded: ReturnType<RulesFile["load"]>;
    try {
      loaded = this.load();
    } catch (err) {
      const content = this.contentOrError();
      if (content === this.lastContent) return false;
      this.lastContent = content;
      this.metrics.reloads.labels("refused").inc();
      this.metrics.fileValid.set(0);
      this.logger.error({ path: this.path, error: errorMessage(err) }, "ext_authz rules refused; the previous rules stay in force");
      return false;
    }
    if (loaded.content === this.lastContent) return false;
    this.lastContent = loaded.content;
    this.lastJwksPath = loaded.jwksPath;
    this.rules = loaded.rules;
    this.metrics.reloads.labels("applied").inc();
    this.metrics.rules.set(loaded.rules.rules.length);
    this.metrics.fileValid.set(1);
    this.watchDirs(loaded.jwksPath);
    this.logger.info({ path: this.path, rules: loaded.rules.rules.length, default: loaded.rules.defaultAction }, "ext_authz rules reloaded");
    return true;
  }

  close(): void {
    clearInterval(this.poll);
    clearTimeout(this.settle);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }

  private load(): { rules: LoadedRules; content: string; jwksPath: string | undefined } {
    const text = readBounded(this.path, "ext-authz-rules");
    const config = parseRulesText(text);
    const jwksPath = config.identity.kind === "jwt" ? resolve(dirname(this.path), config.identity.jwksFile) : undefined;
    const jwks = jwksPath === undefined ? undefined : readBounded(jwksPath, "identity.jwt.jwks_file");
    const verify = createIdentity(config.identity, jwks);
    return { rules: { ...config, verify }, content: `${text}\0${jwks ?? ""}`, jwksPath };
  }

  /** Both files read back byte for byte as last seen: nothing to parse (the poll's usual case). */
  private unchanged(): boolean {
    try {
      const text = readBounded(this.path, "file");
      const jwks = this.lastJwksPath === undefined ? "" : readBounded(this.lastJwksPath, "file");
      return `${text}\0${jwks}` === this.lastContent;
    } catch {
      return false;
    }
  }

  /** What is on disk now, for "did it change" when it does not load (so a refused file is reported once). */
  private contentOrError(): string {
    const read = (p: string): string => {
      try {
        return readBounded(p, "file");
      } catch (err) {
        return `!${errorMessage(err)}`;
      }
    };
    const text = read(this.path);
    let jwks = "";
    try {
      const c = parseRulesText(text);
      if (c.identity.kind === "jwt") jwks = read(resolve(dirname(this.path), c.identity.jwksFile));
    } catch {
      // the rules text itself is the problem
    }
    return `${text}\0${jwks}`;
  }

  private watchDirs(jwksPath: string | undefined): void {
    const dirs = [...new Set([dirname(resolve(this.path)), ...(jwksPath ? [dirname(jwksPath)] : [])])];
    if (dirs.join("\0") === this.watchedDirs.join("\0")) return;
    for (const w of this.watchers) w.close();
    this.watchedDirs = dirs;
    this.watchers = [];
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, () => {
          clearTimeout(this.settle);
          this.settle = setTimeout(() => this.reload(), SETTLE_MS);
          this.settle.unref();
        });
        w.on("error", (err) => this.logger.warn({ dir, err }, "ext_authz rules: watching the directory failed; polling continues"));
        this.watchers.push(w);
      } catch (err) {
        this.logger.warn({ dir, err }, "ext_authz rules: cannot watch the directory; polling every 5 s");
      }
    }
  }
}
