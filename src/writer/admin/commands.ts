import { FailedPreconditionError, NotFoundError } from "../../errors/index.js";
import { AuditKind } from "../../gen/proofgate/v1/admin.js";
import type { Catalog } from "../../gen/proofgate/v1/catalog.js";
import { describeOverride } from "../../overrides/index.js";
import { encodeErasedRecord } from "../../replication/state-record.js";
import { customerSubject, customerToken, customerTokens } from "../../replication/subjects.js";
import type { WriterCore } from "../core.js";
import type { AdminCommand } from "../ha/inputs.js";
import { catalogRemovals } from "./catalog-guard.js";


function describeCatalog(c: Catalog): string {
  return `${c.features.length} features, ${c.plans.length} plans (${c.plans.map((p) => p.id).join(", ")}), ${c.addons.length} add-ons`;
}

/**
 * Applies an admin command to the ledger, as every writer does when it folds the command from the
 * input stream. Runs inside the fold's transaction; what depends on the ledger (removals still in
 * use, an override or customer that does not exist) is decided here, identically on every writer,
 * and thrown as the typed error the caller receives. Returns the last outbox row, if any.
 */
export function applyAdminCommand(core: WriterCore, c: AdminCommand): number | undefined {
  const ledger = core.ledger;
  const now = core.now();
  const { who, reason } = c;
  switch (c.kind) {
    case "catalog": {
      const before = ledger.catalog();
      const lost = before ? catalogRemovals(ledger, before, c.catalog) : undefined;
      if (lost && !c.allowRemovals)
        throw new FailedPreconditionError(`the catalog removes what customers still use: ${lost}; set allow_removals (proofgate catalog apply --allow-removals) to apply it anyway`);
      const id = core.putCatalog(c.catalog);
      if (id !== undefined)
        ledger.appendAudit(
          { kind: AuditKind.AUDIT_KIND_CATALOG_APPLIED, ...who, reason, detail: `${describeCatalog(c.catalog)}${lost ? `; removed, still in use: ${lost}` : ""}` },
          now,
        );
      return id;
    }
    case "put_override": {
      const token = customerToken(c.customerId);
      ledger.putOverride(c.customerId, c.override);
      ledger.appendAudit(
        { kind: AuditKind.AUDIT_KIND_OVERRIDE_PUT, customerId: c.customerId, customerToken: token, feature: c.override.feature, ...who, reason, detail: describeOverride(c.override) },
        now,
      );
      return core.refreshDocument(c.customerId, who);
    }
    case "delete_override": {
      const token = customerToken(c.customerId);
      const existing = ledger.overrides(c.customerId).find((o) => o.overrideId === c.overrideId);
      if (!existing || !ledger.deleteOverride(c.customerId, c.overrideId)) throw new NotFoundError(`no override "${c.overrideId}" for this customer`);
      ledger.appendAudit(
        { kind: AuditKind.AUDIT_KIND_OVERRIDE_DELETED, customerId: c.customerId, customerToken: token, feature: existing.feature, ...who, reason, detail: describeOverride(existing) },
        now,
      );
      return core.refreshDocument(c.customerId, who);
    }
    case "erase": {
      const { customerId } = c;
      const token = customerToken(customerId);
      const subject = customerSubject(customerId);
      const facts = ledger.factCount(customerId);
      const overrides = ledger.overrides(customerId).length;
      const hadDocument = ledger.document(customerId) !== undefined;
      if (!hadDocument && facts === 0 && overrides === 0) throw new NotFoundError("unknown customer");
      ledger.deleteFacts(customerId);
      ledger.deleteOverrides(customerId);
      ledger.deleteDocument(customerId);
      // Earlier outbox rows hold the customer's documents: drop them (pending ones are superseded
      // by the tombstone anyway).
      ledger.deleteOutboxForSubject(subject);
      // The erasure time comes with the command: the tombstone is the same bytes on every writer.
      const id = ledger.enqueue(subject, encodeErasedRecord(new Date(c.atMs)), now);
      for (const t of customerTokens(c.customerId)) ledger.anonymizeAudit(t);
      ledger.appendAudit(
        { kind: AuditKind.AUDIT_KIND_CUSTOMER_ERASED, customerToken: token, ...who, reason, detail: `erased ${facts} facts, ${overrides} overrides and the access document` },
        now,
      );
      return id;
    }
  }
}
