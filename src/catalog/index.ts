export { CatalogIndex, EMPTY_CATALOG, DEFAULT_POLICY } from "./catalog-index.js";
export { validateCatalog, checkCatalogSize, checkCatalogId, checkFeatureValue, typeWord } from "./validate.js";
export { parseCatalogText, catalogToText } from "./file.js";
export { DEMO_CATALOG_PATH, demoCatalog } from "./demo.js";
