import { randomBytes } from "node:crypto";
import { actorOf, guardedUnary, type Gate, type Principal } from "../../auth/index.js";
import { checkId } from "../../billing/index.js";
import { checkCatalogSize, validateCatalog } from "../../catalog/index.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, storageError } from "../../errors/index.js";
import {
  AdminServiceService,
  AuditKind,
  type ApplyCatalogRequest,
  type ApplyCatalogResponse,
  type DeleteOverrideRequest,
  type DeleteOverrideResponse,
  type EraseCustomerRequest,
  type EraseCustomerResponse,
  type GetCatalogResponse,
  type GetCustomerRequest,
  type GetCustomerResponse,
  type PutOverrideRequest,
  type PutOverrideResponse,
} from "../../gen/proofgate/v1/admin.js";
import type { Catalog } from "../../gen/proofgate/v1/catalog.js";
import type { Override } from "../../gen/proofgate/v1/document.js";
import { describeOverride, validateOverride } from "../../overrides/index.js";
import { encodeErasedRecord } from "../../replication/state-record.js";
import { evaluateAll, toEntitlement } from "../../policy/index.js";
import { customerSubject, customerToken, customerTokens } from "../../replication/subjects.js";
import type { ServiceBinding } from "../../transport/grpc.js";
import type { Logger } from "../../observability/logger.js";
import type { WriterCore } from "../core.js";
import type { OutboxPublisher } from "../outbox/publisher.js";
import { catalogRemovals } from "./catalog-guard.js";

export interface AdminDeps {
  readonly core: WriterCore;
  readonly publisher: OutboxPublisher;
  readonly logger: Logger;
  readonly publishTimeoutMs: number;
  /** Wakes the publishers after a commit. */
  readonly committed: () => void;
  /** A catalog was applied (the billing consumer can start). */
  readonly catalogApplied: () => void;
  /** Who may call what (docs/security.md). */
  readonly gate: Gate;
}

function requireId(value: string, field: string): string {
  checkId(value, field);
  return value;
}

function requireText(value: string, field: string): string {
  if (!value.trim()) throw new InvalidArgumentError(field, "required");
  if (value.length > 1_000) throw new InvalidArgumentError(field, "longer than 1000 characters");
  return value;
}

/** Prefixes the field of a validation error with where the value sits in the request. */
function within<T>(prefix: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(`${prefix}.${err.field}`, err.message.slice(err.field.length + 2));
    throw err;
  }
}

/** The AdminService operations, each one ledger transaction; mutations wait for replication. */
export class AdminOperations {
  constructor(private readonly deps: AdminDeps) {}

  private async visible(outboxId: number | undefined): Promise<number> {
    this.deps.committed();
    const p = this.deps.publisher;
    return outboxId === undefined ? p.waitForCommitted(this.deps.publishTimeoutMs) : p.waitFor(outboxId, this.deps.publishTimeoutMs);
  }

  async applyCatalog(req: ApplyCatalogRequest, principal: Principal): Promise<ApplyCatalogResponse> {
    const catalog = req.catalog;
    if (!catalog) throw new InvalidArgumentError("catalog", "required");
    within("catalog", () => validateCatalog(catalog));
    checkCatalogSize(catalog, this.deps.core.limits.maxDocumentBytes, "catalog");
    const reason = requireText(req.reason, "reason");
    const who = actorOf(principal, req.actor);
    const { core } = this.deps;
    let outboxId: number | undefined;
    try {
      outboxId = core.ledger.transaction(() => {
        const before = core.ledger.catalog();
        const lost = before ? catalogRemovals(core.ledger, before, catalog) : undefined;
        if (lost && !req.allowRemovals)
          throw new FailedPreconditionError(`the catalog removes what customers still use: ${lost}; set allow_removals (proofgate catalog apply --allow-removals) to apply it anyway`);
        const id = core.putCatalog(catalog);
        if (id !== undefined)
          core.ledger.appendAudit(
            { kind: AuditKind.AUDIT_KIND_CATALOG_APPLIED, ...who, reason, detail: `${describeCatalog(catalog)}${lost ? `; removed, still in use: ${lost}` : ""}` },
            core.now(),
          );
        return id;
      });
    } catch (err) {
      core.reloadCatalog();
      throw err;
    }
    this.deps.logger.info({ ...who, changed: outboxId !== undefined }, "catalog applied");
    this.deps.catalogApplied();
    return { revision: await this.visible(outboxId) };
  }

  getCatalog(): GetCatalogResponse {
    const catalog = this.deps.core.ledger.catalog();
    if (!catalog) throw new NotFoundError("no catalog applied yet");
    return { catalog };
  }

  async putOverride(req: PutOverrideRequest, principal: Principal): Promise<PutOverrideResponse> {
    const { core } = this.deps;
    const customerId = requireId(req.customerId, "customer_id");
    const o = req.override;
    if (!o) throw new InvalidArgumentError("override", "required");
    const catalog = core.catalog;
    if (!catalog) throw new FailedPreconditionError("no catalog yet: overrides name catalog features");
    within("override", () => validateOverride(o, catalog));
    const who = actorOf(principal, req.actor);
    const { actor } = who;
    const reason = requireText(req.reason, "reason");
    const now = core.now();
    const override: Override = {
      ...o,
      overrideId: o.overrideId || `ovr_${randomBytes(8).toString("hex")}`,
      actor,
      reason,
      createdAtMs: now,
    };
    const token = customerToken(customerId);
    const outboxId = core.ledger.transaction(() => {
      core.ledger.putOverride(customerId, override);
      core.ledger.appendAudit(
        { kind: AuditKind.AUDIT_KIND_OVERRIDE_PUT, customerId, customerToken: token, feature: override.feature, ...who, reason, detail: describeOverride(override) },
        now,
      );
      return core.refreshDocument(customerId, who);
    });
    this.deps.logger.info({ customer: token, overrideId: override.overrideId, actor }, "override put");
    return { overrideId: override.overrideId, revision: await this.visible(outboxId) };
  }

  async deleteOverride(req: DeleteOverrideRequest, principal: Principal): Promise<DeleteOverrideResponse> {
    const { core } = this.deps;
    const customerId = requireId(req.customerId, "customer_id");
    const overrideId = requireId(req.overrideId, "override_id");
    const who = actorOf(principal, req.actor);
    const { actor } = who;
    const reason = requireText(req.reason, "reason");
    const token = customerToken(customerId);
    const outboxId = core.ledger.transaction(() => {
      const existing = core.ledger.overrides(customerId).find((o) => o.overrideId === overrideId);
      if (!existing || !core.ledger.deleteOverride(customerId, overrideId)) throw new NotFoundError(`no override "${overrideId}" for this customer`);
      core.ledger.appendAudit(
        { kind: AuditKind.AUDIT_KIND_OVERRIDE_DELETED, customerId, customerToken: token, feature: existing.feature, ...who, reason, detail: describeOverride(existing) },
        core.now(),
      );
      return core.refreshDocument(customerId, who);
    });
    this.deps.logger.info({ customer: token, overrideId, actor }, "override deleted");
    return { revision: await this.visible(outboxId) };
  }

  getCustomer(req: GetCustomerRequest): GetCustomerResponse {
    const { core } = this.deps;
    const customerId = requireId(req.customerId, "customer_id");
    const document = core.currentDocument(customerId);
    const facts = core.ledger.facts(customerId);
    if (!document && facts.length === 0) throw new NotFoundError("unknown customer");
    const catalog = core.catalog;
    const latest = core.ledger.latestForSubject(customerSubject(customerId));
    return {
      document,
      facts,
      // Entries keep the token they were written with: look under every key (replication/subjects.ts).
      timeline: customerTokens(customerId)
        .flatMap((t) => core.ledger.timeline(t))
        .sort((a, b) => a.seq - b.seq),
      entitlements: catalog ? evaluateAll(document, catalog, core.now()).map(({ feature, decision }) => toEntitlement(feature, decision)) : [],
      // Where the current document is visible: its outbox row's stream sequence, 0 while it is
      // still on its way, or the head revision once the row has been pruned (long published).
      revision: latest ? (latest.publishedSeq ?? 0) : this.deps.publisher.headRevision,
    };
  }

  async eraseCustomer(req: EraseCustomerRequest, principal: Principal): Promise<EraseCustomerResponse> {
    const { core } = this.deps;
    const customerId = requireId(req.customerId, "customer_id");
    const who = actorOf(principal, req.actor);
    const { actor } = who;
    const reason = requireText(req.reason, "reason");
    const token = customerToken(customerId);
    const subject = customerSubject(customerId);
    const ledger = core.ledger;
    const outboxId = ledger.transaction(() => {
      const facts = ledger.factCount(customerId);
      const overrides = ledger.overrides(customerId).length;
      const hadDocument = ledger.document(customerId) !== undefined;
      if (!hadDocument && facts === 0 && overrides === 0) throw new NotFoundError("unknown customer");
      const now = core.now();
      ledger.deleteFacts(customerId);
      ledger.deleteOverrides(customerId);
      ledger.deleteDocument(customerId);
      // Earlier outbox rows hold the customer's documents: drop them (pending ones are superseded
      // by the tombstone anyway).
      ledger.deleteOutboxForSubject(subject);
      const id = ledger.enqueue(subject, encodeErasedRecord(new Date(now)), now);
      for (const t of customerTokens(customerId)) ledger.anonymizeAudit(t);
      ledger.appendAudit(
        {
          kind: AuditKind.AUDIT_KIND_CUSTOMER_ERASED,
          customerToken: token,
          ...who,
          reason,
          detail: `erased ${facts} facts, ${overrides} overrides and the access document`,
        },
        now,
      );
      return id;
    });
    this.deps.logger.info({ customer: token, actor }, "customer erased");
    return { revision: await this.visible(outboxId) };
  }
}

function describeCatalog(c: Catalog): string {
  return `${c.features.length} features, ${c.plans.length} plans (${c.plans.map((p) => p.id).join(", ")}), ${c.addons.length} add-ons`;
}

/** Each method with the role it needs: changes need admin, reads need read. */
export function adminBinding(deps: AdminDeps): ServiceBinding {
  const ops = new AdminOperations(deps);
  const { gate, logger: log } = deps;
  const m = (name: string): string => `AdminService.${name}`;
  // A ledger that cannot be written (disk full) answers what is wrong rather than INTERNAL.
  const write =
    <Req, Res>(fn: (r: Req, p: Principal) => Promise<Res>) =>
    (r: Req, p: Principal): Promise<Res> =>
      fn(r, p).catch((err: unknown) => {
        throw storageError(err, "ledger") ?? err;
      });
  return {
    name: "proofgate.v1.AdminService",
    definition: AdminServiceService,
    implementation: {
      applyCatalog: guardedUnary(gate, m("ApplyCatalog"), "admin", log, write((r: ApplyCatalogRequest, p) => ops.applyCatalog(r, p))),
      getCatalog: guardedUnary(gate, m("GetCatalog"), "read", log, () => ops.getCatalog()),
      putOverride: guardedUnary(gate, m("PutOverride"), "admin", log, write((r: PutOverrideRequest, p) => ops.putOverride(r, p))),
      deleteOverride: guardedUnary(gate, m("DeleteOverride"), "admin", log, write((r: DeleteOverrideRequest, p) => ops.deleteOverride(r, p))),
      getCustomer: guardedUnary(gate, m("GetCustomer"), "read", log, (r: GetCustomerRequest) => ops.getCustomer(r)),
      eraseCustomer: guardedUnary(gate, m("EraseCustomer"), "admin", log, write((r: EraseCustomerRequest, p) => ops.eraseCustomer(r, p))),
    },
  };
}
