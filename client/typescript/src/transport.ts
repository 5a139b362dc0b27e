/** What the client asks of a transport: one protocol request, by operation name. */

/** The protocol's operations: a NATS subject under the prefix, or a gateway route. */
export type Op =
  | "tools"
  | "authorize"
  | "execute"
  | "reconcile"
  | "status"
  | "keys"
  | "approvals.list"
  | "approvals.decide"
  | "authorize.batch"
  | "execute.batch";

/** The `Unavailable` message of a batch request no worker (or route) serves: the client
 * then makes the calls one by one. */
export const NO_BATCHES = "the mediator serves no batches";

/** Whether `op` is one of the batch operations (protocol.md, "Batch"). */
export function isBatchOp(op: Op): op is "authorize.batch" | "execute.batch" {
  return op === "authorize.batch" || op === "execute.batch";
}

/** Headers of the proof of possession for one attempt; `nonce` is the gateway's DPoP nonce. */
export type ProofSigner = (proof: ProofContext) => Promise<Record<string, string>>;

export interface ProofContext {
  /** `nats`: sign a `Handshake-Proof`; `http`: a DPoP proof for `htm` `htu`. */
  transport: "nats" | "http";
  htm: string;
  htu: string;
  nonce?: string;
}

export interface Request {
  op: Op;
  body: Record<string, unknown>;
  /** The session token (`Authorization`); absent for `keys`. */
  session?: string;
  headers?: Record<string, string>;
  /** Signs the proof of possession, per attempt (a DPoP nonce retry signs again). */
  proof?: ProofSigner;
  timeoutMs: number;
  /** `execute`, `execute.batch` and `reconcile`: a timeout means the outcome is unknown, not unavailable. */
  consumesToken?: boolean;
}

export interface Transport {
  readonly kind: "nats" | "http";
  request<T>(req: Request): Promise<T>;
  close(): Promise<void>;
}

export const AUTHORIZATION_HEADER = "Authorization";
export const TOKEN_HEADER = "Handshake-Transaction-Token";
export const PROOF_HEADER = "Handshake-Proof";
export const DPOP_HEADER = "DPoP";
