/** `HandshakeClient`: both phases of the handshake over NATS or the HTTP gateway, receipts
 * verified; the same shape as the Python client (client/mcp_handshake/client). */

import { decodeJwt, type JSONWebKeySet } from "jose";
import {
  ApprovalDenied,
  BadRequest,
  ApprovalPending,
  errorFromBody,
  HandshakeError,
  InternalError,
  InvalidTransaction,
  OutcomeUnknown,
  ValidationFailed,
} from "./errors.js";
import { Approvals } from "./approvals.js";
import { Batcher, type AuthorizeOp, type ExecuteOp } from "./batch.js";
import { optionsFromEnv } from "./env.js";
import { HttpTransport } from "./http.js";
import { ProofKey, RECONCILE_PROOF_PH, RECONCILE_PROOF_TOOL } from "./keys.js";
import { NatsTransport, type NatsOptions } from "./nats.js";
import { isBatchReceipt, parseBatchReceipt } from "./merkle.js";
import { unknownKid, verifyBatchReceipt, verifyReceipt, type RootCache } from "./receipts.js";
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
  AuthorizeBatchReply,
  ExecuteBatchReply,
  ExecuteReply,
  Grant,
  ReceiptClaims,
  StatusReply,
  ToolInfo,
  ToolsReply,
} from "./types.js";

export type Params = Record<string, unknown>;

/** One operation for `callMany` and `stream`: `[tool, params]`. */
export type Call = readonly [tool: string, params: Params];

/** What one operation of a batch came to: its result, or its error (never thrown). */
export type CallOutcome = CallResult | HandshakeError;

export interface ManyOptions {
  /** Most operations in flight, and in one batch request (default 16, at most 256 per
   * request). */
  concurrency?: number;
}

export interface ExecuteBatchOptions {
  /** A batch proof signed elsewhere (e.g. with `ProofKey.signBatch`), sent instead of the
   * one the client signs with its proof key over every operation above the public tier.
   * An operation above the public tier that it does not name is refused by the mediator
   * (`validation_failed`, its token used up). */
  proof?: string;
  /** What to ask the mediator for (default: the client's `batchReceipts`). */
  receipts?: BatchReceipts;
}

/** An execute batch's receipts: `merkle`, one signed Merkle root for the batch and each
 * operation's leaf and inclusion path (protocol.md, "Merkle batch receipts"), or
 * `single`, a signed receipt per operation. */
export type BatchReceipts = "merkle" | "single";

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
  /** What execute batches ask for (default `merkle`); a mediator that answers with a
   * receipt per operation is accepted all the same. */
  batchReceipts?: BatchReceipts;
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
  private jwksLoading: Promise<JSONWebKeySet> | null = null;
  private readonly timeoutMs: number;
  private readonly approvalTimeoutMs: number;
  private readonly verifying: boolean;
  private batchReceipts: BatchReceipts;
  /** Batch roots verified, by their JWS: a batch's root is verified once. */
  private readonly roots: RootCache = new Map();

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
    this.batchReceipts = opts.batchReceipts ?? "merkle";
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

  /**
   * Phase 1 for many operations in one request (`authorize.batch`, protocol.md "Batch"):
   * per operation, in order, its grant or its error. An error of the whole request
   * (`Unauthenticated`, `RateLimited`, `PayloadTooLarge`, ...) is thrown, and then no
   * token was issued. Over a mediator (or gateway) without batches: `Unavailable`.
   */
  async authorizeBatch(ops: readonly AuthorizeOp[]): Promise<(Grant | HandshakeError)[]> {
    const body = {
      ops: ops.map(({ tool, params, context }) =>
        context === undefined ? { tool, params } : { tool, params, context },
      ),
    };
    const { results } = await this.batchRequest({ op: "authorize.batch", body }, ops.length);
    return results.map((r) => {
      const error = errorOf(r);
      if (error !== null) return error;
      return isGrant(r) ? r : new InternalError("unreadable grant in the batch reply");
    });
  }

  /**
   * Phase 2 for many granted operations in one request (`execute.batch`): per operation,
   * in order, its `CallResult` (its own receipt verified alone) or its error. One batch
   * proof, signed by `proofKey`, covers every operation above the public tier; without a
   * proof key those are refused before anything is sent, as `execute` refuses them. An
   * operation still pending approval answers `ApprovalPending`, its token unused. An
   * error of the whole request is thrown; a timeout is `OutcomeUnknown`.
   */
  async executeBatch(
    ops: readonly ExecuteOp[],
    opts: ExecuteBatchOptions = {},
  ): Promise<CallOutcome[]> {
    const outcomes: CallOutcome[] = new Array<CallOutcome>(ops.length);
    const sent: number[] = [];
    const pairs: [string, string][] = [];
    ops.forEach(({ grant, tool }, k) => {
      if (grant.tier !== "public" && opts.proof === undefined && this.proofKey === undefined) {
        outcomes[k] = new ValidationFailed(`${tool} needs a proof key (connect({ proofKey }))`, {
          transactionId: grant.transaction_id,
        });
        return;
      }
      sent.push(k);
      if (grant.tier !== "public") pairs.push([grant.transaction_id, grant.params_hash]);
    });
    if (sent.length === 0) return outcomes;
    const body: { ops: unknown[]; receipts?: BatchReceipts } = {
      ops: sent.map((k) => {
        const { grant, tool, params } = ops[k] as ExecuteOp;
        return { transaction_id: grant.transaction_id, tool, params, token: grant.token };
      }),
    };
    const req: OpRequest = { op: "execute.batch", body, consumesToken: true };
    const key = this.proofKey;
    if (opts.proof !== undefined) {
      const proof = opts.proof;
      req.proof = async () => ({ [PROOF_HEADER]: proof });
    } else if (pairs.length > 0 && key !== undefined) {
      // Over the gateway, a DPoP proof of this request proves every operation in it.
      const session = await this.session.token();
      req.proof = async (ctx): Promise<Record<string, string>> => {
        if (ctx.transport === "http") {
          return { [DPOP_HEADER]: await key.dpop(ctx.htm, ctx.htu, session, ctx.nonce) };
        }
        return { [PROOF_HEADER]: await key.signBatch(pairs) };
      };
    }
    const { results, batch_receipt: root } = await this.merkleRequest(req, sent.length, opts);
    if (this.verifying) await this.keys(); // once, before the receipts are verified
    await Promise.all(
      sent.map(async (k, n) => {
        const { grant, tool } = ops[k] as ExecuteOp;
        outcomes[k] = await this.batchResult(withReceipt(results[n], root), grant, tool);
      }),
    );
    return outcomes;
  }

  /** An execute batch asking for Merkle receipts, unless told not to or the mediator
   * refused the request for them (a mediator before them: `bad_request`, and then nothing
   * was done, so the same request goes again without, and later ones never ask). */
  private async merkleRequest(
    req: OpRequest,
    count: number,
    opts: ExecuteBatchOptions,
  ): Promise<BatchResults> {
    const body = req.body as { receipts?: BatchReceipts };
    if ((opts.receipts ?? this.batchReceipts) === "merkle") {
      try {
        return await this.batchRequest({ ...req, body: { ...body, receipts: "merkle" } }, count);
      } catch (err) {
        if (!(err instanceof BadRequest)) throw err;
        this.batchReceipts = "single";
      }
    }
    return this.batchRequest(req, count);
  }

  /** One operation's result of an execute batch: its receipt verified alone. */
  private async batchResult(result: unknown, grant: Grant, tool: string): Promise<CallOutcome> {
    const error = errorOf(result);
    if (error !== null) return error;
    if (!isExecuteReply(result)) {
      return new OutcomeUnknown("unreadable result in the batch reply", {
        transactionId: grant.transaction_id,
      });
    }
    try {
      const claims = await this.verifyReceipt(result.receipt, result.result, grant, tool);
      return {
        transactionId: grant.transaction_id,
        result: result.result,
        receipt: result.receipt,
        claims,
      };
    } catch (err) {
      if (err instanceof HandshakeError) return err;
      throw err;
    }
  }

  /** A batch request's `results`, one per operation; anything else fails the whole
   * request (an execute batch's as `OutcomeUnknown`: its tokens were sent). */
  private async batchRequest(req: OpRequest, count: number): Promise<BatchResults> {
    // Typed as the gateway's OpenAPI document says; checked here all the same.
    const reply = await this.request<Partial<AuthorizeBatchReply | ExecuteBatchReply> | null>(req);
    const results = reply?.results;
    if (!Array.isArray(results) || results.length !== count) {
      const what = "the batch reply does not answer every operation";
      throw req.consumesToken
        ? new OutcomeUnknown(`${what}: the operations may or may not have run`)
        : new InternalError(what);
    }
    const root = (reply as { batch_receipt?: unknown }).batch_receipt;
    return { results, batch_receipt: typeof root === "string" ? root : undefined };
  }

  /**
   * Run many operations with bounded concurrency: outcomes in input order, each a
   * `CallResult` or the `HandshakeError` of that operation (returned in place, never
   * thrown: one failure fails no other). The calls in flight go to the mediator in
   * batches of at most `concurrency` (`authorize.batch`, `execute.batch` with one batch
   * proof); a restricted operation waits for its approval and runs alone; a mediator
   * without batches gets the calls one by one. For large or unbounded inputs use
   * `stream`, whose memory stays flat.
   */
  async callMany(calls: readonly Call[], opts: ManyOptions = {}): Promise<CallOutcome[]> {
    const outcomes = new Array<CallOutcome>(calls.length);
    for await (const [i, outcome] of this.stream(calls, opts)) outcomes[i] = outcome;
    return outcomes;
  }

  /**
   * Run `[tool, params]` calls from a sync or async iterable, consumed lazily, at most
   * `concurrency` at a time; yield `[index, outcome]` as each completes (the outcome a
   * `CallResult` or a `HandshakeError`). Only the calls in flight are held. Leaving the
   * loop early starts no more calls; those already sent finish unobserved. Batched as
   * `callMany`.
   *
   * ```ts
   * for await (const [i, outcome] of hs.stream(invoices(), { concurrency: 32 })) { ... }
   * ```
   */
  async *stream(
    calls: Iterable<Call> | AsyncIterable<Call>,
    opts: ManyOptions = {},
  ): AsyncGenerator<[number, CallOutcome], void, undefined> {
    const concurrency = opts.concurrency ?? 16;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError("concurrency must be an integer of at least 1");
    }
    const source = asyncIterator(calls);
    const batcher = this.batcher(concurrency);
    // Each settles to its index with the outcome, or a bug to rethrow: never rejected, so
    // nothing is left unhandled when the caller stops early.
    const running = new Map<number, Promise<Settled>>();
    let index = 0;
    let exhausted = false;
    try {
      for (;;) {
        while (!exhausted && running.size < concurrency) {
          const next = await source.next();
          if (next.done === true) {
            exhausted = true;
            break;
          }
          const [tool, params] = next.value;
          const i = index++;
          const work = async (): Promise<CallResult> => batcher.call(tool, params);
          running.set(
            i,
            work().then(
              (outcome): Settled => ({ index: i, outcome }),
              (err: unknown): Settled =>
                err instanceof HandshakeError ? { index: i, outcome: err } : { index: i, bug: err },
            ),
          );
        }
        if (running.size === 0) return;
        const done = await Promise.race(running.values());
        running.delete(done.index);
        if ("bug" in done) throw done.bug;
        yield [done.index, done.outcome];
      }
    } finally {
      if (!exhausted) await source.return?.();
    }
  }

  /** Batches of at most `window` of the calls in flight (batch.ts). */
  private batcher(window: number): Batcher<CallResult> {
    return new Batcher<CallResult>(
      {
        authorizeBatch: (ops) => this.authorizeBatch(ops),
        executeBatch: (ops) => this.executeBatch(ops),
        call: (tool, params) => this.call(tool, params),
        execute: ({ grant, tool, params }) => this.execute(grant, tool, params),
        wait: ({ grant, tool, params }) =>
          this.wait({ grant, tool, params, transactionId: grant.transaction_id }),
      },
      window,
    );
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
    if (!refresh && this.jwks !== null) return this.jwks;
    // One request however many receipts (a batch's, say) ask at once.
    this.jwksLoading ??= this.request<JSONWebKeySet>({ op: "keys", body: {} }, false).finally(
      () => {
        this.jwksLoading = null;
      },
    );
    this.jwks = await this.jwksLoading;
    return this.jwks;
  }

  /** Check the receipt's signature and that it covers this transaction and result. */
  async verifyReceipt(
    receipt: string,
    result: unknown,
    grant: Grant,
    tool: string,
  ): Promise<ReceiptClaims> {
    const batch = isBatchReceipt(receipt);
    if (!this.verifying) {
      return (batch ? parseBatchReceipt(receipt).leaf : decodeJwt(receipt)) as ReceiptClaims;
    }
    let jwks = await this.keys();
    if (unknownKid(receipt, jwks)) jwks = await this.keys(true);
    const expected = {
      transactionId: grant.transaction_id,
      tool,
      paramsHash: grant.params_hash,
      result,
    };
    if (batch) return verifyBatchReceipt(receipt, jwks, expected, this.roots);
    return verifyReceipt(receipt, jwks, expected);
  }
}

/** A batch reply's results, and its signed Merkle root when it has one. */
interface BatchResults {
  results: unknown[];
  batch_receipt?: string | undefined;
}

/** An operation's result in a Merkle batch with its receipt on its own (the batch's root,
 * its index, path and leaf) as its `receipt`, verified as any receipt (a malformed
 * inclusion fails there, as a malformed receipt would). */
function withReceipt(result: unknown, root: string | undefined): unknown {
  const r = result as { receipt?: unknown; inclusion?: unknown } | null;
  if (typeof r !== "object" || r === null || "receipt" in r) return result;
  const inc = r.inclusion as { index?: unknown; path?: unknown; leaf?: unknown } | null;
  if (typeof inc !== "object" || inc === null) return result;
  const { inclusion: _, ...rest } = r;
  const own = { root: root ?? "", index: inc.index, path: inc.path, leaf: inc.leaf };
  return { ...rest, receipt: JSON.stringify(own) };
}

type Settled = { index: number; outcome: CallOutcome } | { index: number; bug: unknown };

/** An operation's error result (`{error: {...}}`) as its error class; else null. */
function errorOf(result: unknown): HandshakeError | null {
  const error = (result as { error?: unknown } | null)?.error;
  return typeof error === "object" && error !== null ? errorFromBody(result) : null;
}

function isGrant(r: unknown): r is Grant {
  const g = r as Partial<Grant> | null;
  return (
    typeof g === "object" &&
    g !== null &&
    typeof g.transaction_id === "string" &&
    typeof g.token === "string" &&
    typeof g.status === "string" &&
    typeof g.tier === "string" &&
    typeof g.params_hash === "string"
  );
}

function isExecuteReply(r: unknown): r is ExecuteReply {
  const x = r as Partial<ExecuteReply> | null;
  return typeof x === "object" && x !== null && typeof x.receipt === "string" && "result" in x;
}

function asyncIterator<T>(source: Iterable<T> | AsyncIterable<T>): AsyncIterator<T> {
  if (Symbol.asyncIterator in source) return source[Symbol.asyncIterator]();
  const it = source[Symbol.iterator]();
  return {
    next: async () => it.next(),
    return: async () => it.return?.() ?? { done: true, value: undefined },
  };
}
