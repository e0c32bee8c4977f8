import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Catalog } from "../gen/proofgate/v1/catalog.js";
import { parseCatalogText } from "./file.js";

/** examples/catalog.yaml: the demo catalog `proofgate dev`, the benchmark and the tests use. */
export const DEMO_CATALOG_PATH = fileURLToPath(new URL("../../examples/catalog.yaml", import.meta.url));

export function demoCatalog(): Catalog {
  return parseCatalogText(readFileSync(DEMO_CATALOG_PATH, "utf8"));
}
