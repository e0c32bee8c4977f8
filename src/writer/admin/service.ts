import { randomBytes } from "node:crypto";
import { actorOf, guardedUnary, type Gate, type Principal } from "../../auth/index.js";
import { checkId } from "../../billing/index.js";
import { checkCatalogSize, validateCatalog } from "../../catalog/index.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../../errors/index.js";
import {
  AdminServiceService,
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
import type { Override } from "../../gen/proofgate/v1/document.js";
import { validateOverride } from "../../overrides/index.js";
import { evaluateAll, toEntitlement } from "../../policy/index.js";
import { customerSubject, customerToken, customerTokens } from "../../replication/subjects.js";
import type { ServiceBinding } from "../../transport/grpc.js";
import type { Logger } from "../../observability/logger.js";
import type { WriterCore } from "../core.js";
import type { OutboxPublisher } from "../outbox/publisher.js";
import type { InputFold } from "../ha/fold.js";
import { encodeAdminCommand, INPUT_ADMIN_SUBJECT, type AdminCommand } from "../ha/inputs.js";

export interface AdminDeps {
  readonly core: WriterCore;
  readonly publisher: OutboxPublisher;
  readonly logger: Logger;
  readonly publishTimeoutMs: number;
  /** The input stream every writer folds: changes go through it. */
  readonly fold: InputFold;
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

/**
 * The AdminService operations. A change is checked here, then appended to the input stream as a
 * command that every writer applies in the same order (admin/commands.ts); the call answers once
 * this writer has applied it and it is on the state stream. Reads are answered from this writer's
 * ledger, on any writer.
 */
export class AdminOperations {
  constructor(private readonly deps: AdminDeps) {}

  /** Appends the command, waits for this writer to apply it, and returns the revision where it is visible. */
  private async run(command: AdminCommand): Promise<number> {
    const { fold, publisher, publishTimeoutMs } = this.deps;
    const outcome = await fold.submit(INPUT_ADMIN_SUBJECT, encodeAdminCommand(command), {}, publishTimeoutMs);
    if (outcome?.error !== undefined) throw outcome.error;
    // Visibility gets its own budget: the append may have waited for NATS at start-up.
    const left = publishTimeoutMs;
    const ids = outcome?.outboxIds ?? [];
    return ids.length > 0 ? publisher.waitFor(Math.max(...ids), left) : publisher.waitForCommitted(left);
  }

  async applyCatalog(req: ApplyCatalogRequest, principal: Principal): Promise<ApplyCatalogResponse> {
    const catalog = req.catalog;
    if (!catalog) throw new InvalidArgumentError("catalog", "required");
    within("catalog", () => validateCatalog(catalog));
    checkCatalogSize(catalog, this.deps.core.limits.maxDocumentBytes, "catalog");
    const reason = requireText(req.reason, "reason");
    const who = actorOf(principal, req.actor);
    const revision = await this.run({ kind: "catalog", catalog, allowRemovals: req.allowRemovals, who, reason });
    this.deps.logger.info({ ...who }, "catalog applied");
    return { revision };
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
    // Decided here, once: every writer stores the same override.
    const override: Override = {
      ...o,
      overrideId: o.overrideId || `ovr_${randomBytes(8).toString("hex")}`,
      actor,
      reason,
      createdAtMs: core.now(),
    };
    const revision = await this.run({ kind: "put_override", customerId, override, who, reason });
    this.deps.logger.info({ customer: customerToken(customerId), overrideId: override.overrideId, actor }, "override put");
    return { overrideId: override.overrideId, revision };
  }

  async deleteOverride(req: DeleteOverrideRequest, principal: Principal): Promise<DeleteOverrideResponse> {
    const customerId = requireId(req.customerId, "customer_id");
    const overrideId = requireId(req.overrideId, "override_id");
    const who = actorOf(principal, req.actor);
    const reason = requireText(req.reason, "reason");
    const revision = await this.run({ kind: "delete_override", customerId, overrideId, who, reason });
    this.deps.logger.info({ customer: customerToken(customerId), overrideId, actor: who.actor }, "override deleted");
    return { revision };
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
    const reason = requireText(req.reason, "reason");
    const revision = await this.run({ kind: "erase", customerId, atMs: core.now(), who, reason });
    this.deps.logger.info({ customer: customerToken(customerId), actor: who.actor }, "customer erased");
    return { revision };
  }
}

/** Each method with the role it needs: changes need admin, reads need read. */
export function adminBinding(deps: AdminDeps): ServiceBinding {
  const ops = new AdminOperations(deps);
  const { gate, logger: log } = deps;
  const m = (name: string): string => `AdminService.${name}`;
  return {
    name: "proofgate.v1.AdminService",
    definition: AdminServiceService,
    implementation: {
      applyCatalog: guardedUnary(gate, m("ApplyCatalog"), "admin", log, (r: ApplyCatalogRequest, p) => ops.applyCatalog(r, p)),
      getCatalog: guardedUnary(gate, m("GetCatalog"), "read", log, () => ops.getCatalog()),
      putOverride: guardedUnary(gate, m("PutOverride"), "admin", log, (r: PutOverrideRequest, p) => ops.putOverride(r, p)),
      deleteOverride: guardedUnary(gate, m("DeleteOverride"), "admin", log, (r: DeleteOverrideRequest, p) => ops.deleteOverride(r, p)),
      getCustomer: guardedUnary(gate, m("GetCustomer"), "read", log, (r: GetCustomerRequest) => ops.getCustomer(r)),
      eraseCustomer: guardedUnary(gate, m("EraseCustomer"), "admin", log, (r: EraseCustomerRequest, p) => ops.eraseCustomer(r, p)),
    },
  };
}
