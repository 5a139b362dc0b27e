/**
 * mcp-handshake: authorize then execute sensitive agent operations through the
 * mediator, over NATS or the HTTP gateway, with verified receipts.
 *
 * ```ts
 * import { HandshakeClient, ProofKey } from "mcp-handshake";
 * const hs = await HandshakeClient.connect({
 *   gatewayUrl: "http://127.0.0.1:8080",
 *   session: { env: "HANDSHAKE_SESSION" },
 *   proofKey: await ProofKey.loadOrCreate(".../agent.pem"),
 * });
 * const { result, claims } = await hs.call("payments.get_exchange_rate", { base: "EUR", quote: "USD" });
 * ```
 */

export { HandshakeClient } from "./client.js";
export { Approvals, type DecideOptions } from "./approvals.js";
export type {
  BatchReceipts,
  Call,
  CallOutcome,
  CallResult,
  ConnectOptions,
  ExecuteBatchOptions,
  ManyOptions,
  Params,
  PendingCall,
} from "./client.js";
export type { AuthorizeOp, ExecuteOp } from "./batch.js";
export { defaultAgentKey, optionsFromEnv } from "./env.js";
export * from "./errors.js";
export { canonicalJson, paramsHash, sha256Tagged } from "./hashing.js";
export {
  accessTokenHash,
  BATCH_PROOF_TYP,
  DECISION_TYP,
  DPOP_TYP,
  PROOF_TYP,
  ProofKey,
  proofOps,
  RECONCILE_PROOF_PH,
  RECONCILE_PROOF_TOOL,
  type KeyAlg,
  type SignAt,
} from "./keys.js";
export { DEFAULT_PREFIX, type NatsOptions } from "./nats.js";
export {
  RECEIPT_TYP,
  verifyBatchReceipt,
  verifyReceipt,
  type Expected,
  type RootCache,
} from "./receipts.js";
export {
  BATCH_RECEIPT_TYP,
  isBatchReceipt,
  leafHash,
  nodeHash,
  parseBatchReceipt,
  rootFromPath,
  TREE,
  tree,
  verifyInclusion,
  verifyRoot,
  type BatchReceipt,
  type RootClaims,
} from "./merkle.js";
export {
  asSessionProvider,
  callbackSession,
  CachedSession,
  commandSession,
  envSession,
  fileSession,
  staticSession,
  type SessionProvider,
  type SessionSource,
} from "./session.js";
export type * from "./types.js";
