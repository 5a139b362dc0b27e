/** `HandshakeClient`: both phases of the handshake over NATS or the HTTP gateway, receipts
 * verified; the same shape as the Python client (client/mcp_handshake/client). */

import { decodeJwt, type JSONWebKeySet } from "jose";
import { ApprovalDenied, ApprovalPending, InvalidTransaction, ValidationFailed } from "./errors.js";
import { Approvals } from "./approvals.js";
import { optionsFromEnv } from "./env.js";
import { HttpTransport } from "./http.js";
import { ProofKey, RECONCILE_PROOF_PH, RECONCILE_PROOF_TOOL } from "./keys.js";
import { NatsTransport, type NatsOptions } from "./nats.js";
import { unknownKid, verifyReceipt } from "./receipts.js";
import { asSessionProvider, type SessionProvider, type SessionSource } from "./session.js";
import {
  DPOP_HEADER,
  PROOF_HEADER,
  TOKEN_HEADER,
  type ProofSigner,
  type Request,
  type Transport,
} from "./transport.js";
import type {
  ExecuteReply,
  Grant,
  ReceiptClaims,
  StatusReply,
  ToolInfo,
  ToolsReply,
} from "./types.js";

export type Params = Record<string, unknown>;

/** A request as the client builds it: the session and a default timeout are added. */
export type OpRequest = Omit<Request, "timeoutMs" | "session"> & { timeoutMs?: number };

export interface ConnectOptions extends Partial<NatsOptions> {
  /** The HTTP gateway's URL (as `mcp-handshake up` prints it); or give `natsUrl`. */
  gatewayUrl?: string;
  /** The session: a token, `{env}`, `{file}`, `{command}`, a callback or a provider.
   * Default: `$HANDSHAKE_SESSION`. */
  session?: SessionSource;
  /** Signs proofs of possession (tiers internal and above) and approvers' decisions. */
  proofKey?: ProofKey;
  /** Per request (default 15 s); a status long poll adds its wait. */
  timeoutMs?: number;
  /** How long `call` and `waitForApproval` wait for a decision (default 600 s). */
  approvalTimeoutMs?: number;
  /** Check every receipt against the mediator's JWKS (default true). */
  verifyReceipts?: boolean;
}

/** A submitted operation: authorized, possibly waiting for approval. */
export interface PendingCall {
  tool: string;
  params: Params;
  grant: Grant;
  transactionId: string;
}

/** The outcome of one handshake: the result and its verified receipt. */
export interface CallResult {
  transactionId: string;
  result: unknown;
  receipt: string;
  /** The receipt's verified claims (who, what, when, approvals). */
  claims: ReceiptClaims;
}

export class HandshakeClient {
  private jwks: JSONWebKeySet | null = null;
  private readonly timeoutMs: number;
  private readonly approvalTimeoutMs: number;
  private readonly verifying: boolean;

  /** Approvers: the transactions waiting for this caller's decision, and deciding them. */
  readonly approvals: Approvals;

  private constructor(
    readonly transport: Transport,
    private readonly session: SessionProvider,
    readonly proofKey: ProofKey | undefined,
    opts: ConnectOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.approvalTimeoutMs = opts.approvalTimeoutMs ?? 600_000;
    this.verifying = opts.verifyReceipts ?? true;
    this.approvals = new Approvals((req) => this.request(req), session, proofKey);
  }

  /** A connected client: over the gateway (`gatewayUrl`) or NATS (`natsUrl`). */
  static async connect(opts: ConnectOptions): Promise<HandshakeClient> {
    if ((opts.gatewayUrl === undefined) === (opts.natsUrl === undefined)) {
      throw new TypeError("give exactly one of gatewayUrl and natsUrl");
    }
    const transport: Transport =
      opts.gatewayUrl !== undefined
        ? new HttpTransport(opts.gatewayUrl)
        : await NatsTransport.connect(opts as NatsOptions);
    return new HandshakeClient(transport, asSessionProvider(opts.session), opts.proofKey, opts);
  }

  /** A client configured from `HANDSHAKE_*` variables or the running `mcp-handshake up`
   * stack (see `optionsFromEnv`), with `overrides` on top. */
  static async fromEnv(
    overrides: ConnectOptions & { transport?: "http" | "nats" } = {},
  ): Promise<HandshakeClient> {
    const { transport, ...rest } = overrides;
    const base = await optionsFromEnv(transport);
    if (rest.gatewayUrl !== undefined) delete base.natsUrl;
    if (rest.natsUrl !== undefined) delete base.gatewayUrl;
    return HandshakeClient.connect({ ...base, ...rest });
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  private async request<T>(req: OpRequest, auth = true): Promise<T> {
    const session = auth ? await this.session.token() : undefined;
    return this.transport.request<T>({
      timeoutMs: this.timeoutMs,
      ...req,
      ...(session !== undefined ? { session } : {}),
    });
  }

  /** The tools this caller may use, with their params JSON Schemas. */
  async tools(): Promise<ToolInfo[]> {
    return (await this.request<ToolsReply>({ op: "tools", body: {} })).tools;
  }

  /** Phase 1: a single-use token for exactly this operation. */
  async authorize(tool: string, params: Params, context?: Params): Promise<Grant> {
    const body: Params = { tool, params };
    if (context !== undefined) body.context = context;
    return this.request<Grant>({ op: "authorize", body });
  }

  /** Phase 2: run the operation the grant is for; verify the receipt. Tiers above public
   * sign a proof with `proofKey`: DPoP over the gateway, `Handshake-Proof` over NATS. */
  async execute(grant: Grant, tool: string, params: Params): Promise<CallResult> {
    const req: OpRequest = {
      op: "execute",
      body: { transaction_id: grant.transaction_id, tool, params },
      headers: { [TOKEN_HEADER]: grant.token },
      consumesToken: true,
    };
    if (grant.tier !== "public") {
      req.proof = await this.executeProof(grant, tool);
    }
    const reply = await this.request<ExecuteReply>(req);
    const claims = await this.verifyReceipt(reply.receipt, reply.result, grant, tool);
    return {
      transactionId: reply.transaction_id,
      result: reply.result,
      receipt: reply.receipt,
      claims,
    };
  }

  private async executeProof(grant: Grant, tool: string): Promise<ProofSigner> {
    const key = this.proofKey;
    if (key === undefined) {
      throw new ValidationFailed(`${tool} needs a proof key (connect({ proofKey }))`);
    }
    const session = await this.session.token();
    return async (ctx): Promise<Record<string, string>> => {
      if (ctx.transport === "http") {
        return { [DPOP_HEADER]: await key.dpop(ctx.htm, ctx.htu, session, ctx.nonce) };
      }
      return { [PROOF_HEADER]: await key.sign(grant.transaction_id, tool, grant.params_hash) };
    };
  }

  /** Both phases for one operation, waiting for approval if needed. */
  async call(tool: string, params: Params, context?: Params): Promise<CallResult> {
    return this.wait(await this.submit(tool, params, context));
  }

  /** Phase 1 only: a handle to `wait()` on (restricted operations wait for approval). */
  async submit(tool: string, params: Params, context?: Params): Promise<PendingCall> {
    const grant = await this.authorize(tool, params, context);
    return { tool, params, grant, transactionId: grant.transaction_id };
  }

  /** Wait for approval if needed, then execute. */
  async wait(pending: PendingCall, timeoutMs?: number): Promise<CallResult> {
    if (pending.grant.status === "pending_approval") {
      await this.waitForApproval(pending.grant, timeoutMs);
    }
    return this.execute(pending.grant, pending.tool, pending.params);
  }

  /** Where a transaction stands; with `waitS` (max 30), answers as soon as a pending
   * approval is decided. */
  async status(transactionId: string, waitS?: number): Promise<StatusReply> {
    const body: Params = { transaction_id: transactionId };
    if (waitS) body.wait_s = waitS;
    const timeoutMs = this.timeoutMs + (waitS ?? 0) * 1000;
    return this.request<StatusReply>({ op: "status", body, timeoutMs });
  }

  /** Resolve once `grant` is approved (long-polling `status`); `ApprovalDenied` if denied
   * or expired, `ApprovalPending` if still undecided after `timeoutMs`. */
  async waitForApproval(grant: Grant, timeoutMs?: number): Promise<void> {
    const txn = grant.transaction_id;
    const deadline = Date.now() + (timeoutMs ?? this.approvalTimeoutMs);
    for (;;) {
      const left = (deadline - Date.now()) / 1000;
      if (left <= 0) throw new ApprovalPending(undefined, { transactionId: txn });
      const st = await this.status(txn, Math.min(left, 25));
      if (st.status === "approved" || st.status === "granted") return;
      if (st.status === "denied" || st.status === "expired") {
        throw new ApprovalDenied(`the operation was ${st.status}`, { transactionId: txn });
      }
      if (st.status !== "pending_approval")
        throw new InvalidTransaction(undefined, { transactionId: txn });
    }
  }

  /** Settle one of this caller's transactions left `outcome_unknown` (protocol.md,
   * "Reconcile"); answers like `execute`, with a verified receipt. */
  async reconcile(transactionId: string): Promise<CallResult> {
    const key = this.proofKey;
    const req: OpRequest = {
      op: "reconcile",
      body: { transaction_id: transactionId },
      consumesToken: true,
    };
    if (key !== undefined) {
      // Not DPoP, on either transport: the reconcile proof signs the operation.
      req.proof = async () => ({
        [PROOF_HEADER]: await key.sign(transactionId, RECONCILE_PROOF_TOOL, RECONCILE_PROOF_PH),
      });
    }
    const reply = await this.request<ExecuteReply>(req);
    const tool = String(decodeJwt(reply.receipt).tool ?? "");
    const grant = { transaction_id: transactionId, params_hash: reply.params_hash ?? "" } as Grant;
    const claims = await this.verifyReceipt(reply.receipt, reply.result, grant, tool);
    return {
      transactionId: reply.transaction_id,
      result: reply.result,
      receipt: reply.receipt,
      claims,
    };
  }

  /** The mediator's receipt-signing keys (JWKS from `keys`). */
  async keys(refresh = false): Promise<JSONWebKeySet> {
    if (refresh || this.jwks === null) {
      this.jwks = await this.request<JSONWebKeySet>({ op: "keys", body: {} }, false);
    }
    return this.jwks;
  }

  /** Check the receipt's signature and that it covers this transaction and result. */
  async verifyReceipt(
    receipt: string,
    result: unknown,
    grant: Grant,
    tool: string,
  ): Promise<ReceiptClaims> {
    if (!this.verifying) return decodeJwt(receipt) as ReceiptClaims;
    let jwks = await this.keys();
    if (unknownKid(receipt, jwks)) jwks = await this.keys(true);
    return verifyReceipt(receipt, jwks, {
      transactionId: grant.transaction_id,
      tool,
      paramsHash: grant.params_hash,
      result,
    });
  }
}
