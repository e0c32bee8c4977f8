import { readFileSync } from "node:fs";
import type { ApplyCatalogResponse, GetCatalogResponse } from "../gen/proofgate/v1/admin.js";
import { catalogToText, parseCatalogText } from "../catalog/index.js";
import { DEFAULT_WRITER, call, writerAddress, writerClients } from "./client.js";
import { parseCommand, required } from "./args.js";

export const summary = "apply or show the catalog (features, plans, add-ons, policy)";

const USAGE = `usage: proofgate catalog apply FILE [--writer HOST:PORT] [--actor NAME] [--reason TEXT] [--allow-removals]
       proofgate catalog get [--writer HOST:PORT]

apply validates FILE (YAML or JSON; see examples/catalog.yaml) locally, then replaces the
catalog on the writer (PROOFGATE_WRITER_ADDRESS, the running \`proofgate dev\`, else ${DEFAULT_WRITER}) and prints the revision at which sidecars have it.
A catalog that drops plans, add-ons or features customers still use is refused, listing them,
unless --allow-removals is given. The audit records the authenticated principal; --actor is
kept as "on behalf of".`;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals, help } = parseCommand(
    argv,
    { writer: { type: "string" }, actor: { type: "string" }, reason: { type: "string" }, "allow-removals": { type: "boolean" } },
    USAGE,
  );
  if (help) return 0;
  const [action, file] = positionals;
  const { ingest, admin } = writerClients(writerAddress(v.writer));
  try {
    if (action === "apply") {
      const path = required(file, "FILE");
      const catalog = parseCatalogText(readFileSync(path, "utf8"));
      const request = { catalog, actor: v.actor ?? process.env["USER"] ?? "cli", reason: v.reason ?? `proofgate catalog apply ${path}`, allowRemovals: v["allow-removals"] === true };
      const res = await call<ApplyCatalogResponse>((md, o, cb) => admin.applyCatalog(request, md, o, cb));
      console.log(`catalog applied: ${catalog.features.length} features, ${catalog.plans.length} plans, ${catalog.addons.length} add-ons; revision ${res.revision}`);
      return 0;
    }
    if (action === "get") {
      const res = await call<GetCatalogResponse>((md, o, cb) => admin.getCatalog({}, md, o, cb));
      process.stdout.write(res.catalog ? catalogToText(res.catalog) : "# no catalog applied yet\n");
      return 0;
    }
    console.error(USAGE);
    return 2;
  } finally {
    ingest.close();
    admin.close();
  }
}
