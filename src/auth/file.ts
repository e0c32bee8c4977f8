import { readFileSync, statSync, unwatchFile, watchFile, type Stats } from "node:fs";
import { errorMessage } from "../errors/index.js";
import type { Logger } from "../observability/logger.js";
import { MAX_AUTH_FILE_BYTES, PrincipalTable, type Authenticator, type CertificateAuthenticator, type Principal } from "./principals.js";

function load(path: string): PrincipalTable {
  const size = statSync(path).size;
  if (size > MAX_AUTH_FILE_BYTES) throw new Error(`auth file ${path}: larger than ${MAX_AUTH_FILE_BYTES} bytes`);
  return PrincipalTable.parse(readFileSync(path, "utf8"));
}

/**
 * The auth file, reloaded when it changes so tokens rotate without a restart. Polling (stat)
 * rather than fs.watch: it follows the symlink swap a Kubernetes Secret volume does on update.
 * A file that fails to parse is logged and ignored; the last good table stays in force.
 */
export class AuthFile implements Authenticator, CertificateAuthenticator {
  private table: PrincipalTable;
  private readonly listener: (cur: Stats, prev: Stats) => void;

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
    private readonly onReload: (ok: boolean) => void,
  ) {
    // At start a bad file is fatal: the writer must not come up with no principals.
    this.table = load(path);
    this.listener = (cur, prev) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) this.reload();
    };
  }

  static open(path: string, logger: Logger, options: { intervalMs?: number; onReload?: (ok: boolean) => void } = {}): AuthFile {
    const f = new AuthFile(path, logger, options.onReload ?? (() => undefined));
    watchFile(path, { interval: options.intervalMs ?? 1_000, persistent: false }, f.listener);
    logger.info({ path, principals: f.table.principals.map((p) => p.name) }, "auth file loaded");
    return f;
  }

  reload(): void {
    try {
      this.table = load(this.path);
      this.logger.info({ path: this.path, principals: this.table.principals.map((p) => p.name) }, "auth file reloaded");
      this.onReload(true);
    } catch (err) {
      this.logger.error({ path: this.path, err: errorMessage(err) }, "auth file not reloaded; the previous principals stay in force");
      this.onReload(false);
    }
  }

  authenticateToken(token: string): Principal | undefined {
    return this.table.authenticateToken(token);
  }

  authenticateCertificate(identities: readonly string[]): Principal | undefined {
    return this.table.authenticateCertificate(identities);
  }

  close(): void {
    unwatchFile(this.path, this.listener);
  }
}
