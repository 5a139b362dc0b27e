/** Approvers' calls (`approvals.list`, `approvals.decide`; docs/protocol.md, "Status and
 * approvals"), with decisions signed by the proof key when the session is bound to it. */

import { decodeJwt } from "jose";
import type { OpRequest } from "./client.js";
import { InvalidTransaction, ValidationFailed } from "./errors.js";
import type { ProofKey } from "./keys.js";
import type { SessionProvider } from "./session.js";
import { PROOF_HEADER } from "./transport.js";
import type { ApprovalsReply, DecideReply, PendingApproval } from "./types.js";

export interface DecideOptions {
  reason?: string;
  /** The preview hash the approver saw (default: read from the pending list). */
  previewHash?: string;
  /** Sign the decision (default: when the session is bound to the proof key, where the
   * mediator requires it; `true` for a key registered with `keys register`). */
  sign?: boolean;
}

type Send = <T>(req: OpRequest) => Promise<T>;

export class Approvals {
  constructor(
    private readonly send: Send,
    private readonly session: SessionProvider,
    private readonly proofKey: ProofKey | undefined,
  ) {}

  /** The transactions waiting for this caller's decision (never their own). */
  async list(): Promise<PendingApproval[]> {
    return (await this.send<ApprovalsReply>({ op: "approvals.list", body: {} })).approvals;
  }

  /** `approve` or `deny` a pending transaction. A signed decision carries a JWS by the
   * proof key over `{txn, preview_hash, decision}`, which the audit trail keeps. */
  async decide(
    txn: string,
    decision: "approve" | "deny",
    opts: DecideOptions = {},
  ): Promise<DecideReply> {
    const body: Record<string, unknown> = { transaction_id: txn, decision };
    if (opts.reason) body.reason = opts.reason;
    const req: OpRequest = { op: "approvals.decide", body };
    if (opts.sign ?? (await this.sessionBoundToKey())) {
      const key = this.proofKey;
      if (key === undefined) throw new ValidationFailed("signing a decision needs a proof key");
      let previewHash = opts.previewHash;
      if (previewHash === undefined) {
        const shown = (await this.list()).find((a) => a.transaction_id === txn);
        if (shown === undefined) {
          throw new InvalidTransaction("no pending approval with this id that you may decide");
        }
        previewHash = shown.preview_hash;
      }
      req.headers = { [PROOF_HEADER]: await key.signDecision(txn, previewHash, decision) };
    }
    return this.send<DecideReply>(req);
  }

  /** Whether the session names the proof key in `cnf.jkt` (read, not verified: the
   * mediator verifies). */
  private async sessionBoundToKey(): Promise<boolean> {
    if (this.proofKey === undefined) return false;
    try {
      const cnf = decodeJwt(await this.session.token()).cnf as { jkt?: unknown } | undefined;
      return cnf?.jkt === this.proofKey.thumbprint;
    } catch {
      return false;
    }
  }
}
