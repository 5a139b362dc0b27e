/**
 * Wire types. Those the gateway's OpenAPI document describes are generated from
 * it at build time (`npm run generate`, from the committed `openapi.json`, which a
 * test keeps identical to what the gateway serves), so they cannot drift.
 */

import type { components } from "./generated/openapi.js";

type Schemas = components["schemas"];

export type Grant = Schemas["Grant"];
export type ExecuteReply = Schemas["ExecuteReply"];
export type ToolInfo = Schemas["ToolInfo"];
export type ToolsReply = Schemas["ToolsReply"];
export type StatusReply = Schemas["StatusReply"];
export type Jwks = Schemas["Jwks"];
export type ErrorReply = Schemas["ErrorReply"];
/** The batch routes' wire types (docs/gateway.md "Batches", protocol.md "Batch"). */
export type AuthorizeBatchReply = Schemas["AuthorizeBatchReply"];
export type ExecuteBatchReply = Schemas["ExecuteBatchReply"];

/** A transaction an approver may decide (`approvals.list`, docs/protocol.md). Written
 * by hand: the gateway's OpenAPI document does not describe the approvals routes yet. */
export interface PendingApproval {
  transaction_id: string;
  sub: string;
  tool: string;
  tier: string;
  /** The params with sensitive parts masked; its hash is recorded with decisions. */
  preview: unknown;
  preview_hash: string;
  requested_at: number;
  expires_at: number;
  approvals: number;
  quorum: number;
  escalated?: string | null;
  /** Requester-supplied, never checked: show them as the requester's words. */
  agent?: string | null;
  reason?: string | null;
  untrusted?: string[];
}

export interface ApprovalsReply {
  approvals: PendingApproval[];
}

/** The `approvals.decide` reply (docs/protocol.md). */
export interface DecideReply {
  transaction_id: string;
  status: string;
  approvals: number;
  quorum: number;
  tool?: string;
  requester?: string;
  tier?: string;
  preview_hash?: string;
}

/** The claims of a verified receipt (docs/protocol.md, "Receipt"). */
export interface ReceiptClaims {
  iss: string;
  sub: string;
  txn: string;
  tool: string;
  tier: string;
  ph: string;
  rh: string;
  iat: number;
  auth_at?: number;
  approvals?: { by: string; at: number }[];
  reconciled?: number;
  [claim: string]: unknown;
}
