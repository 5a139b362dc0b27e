/**
 * Vercel AI SDK tools for the mediated catalog (`mcp-handshake/ai`; needs `ai` 5, 6 or 7).
 *
 * ```ts
 * const hs = await HandshakeClient.connect({ gatewayUrl, session, proofKey });
 * const tools = await aiSdkTools(hs);
 * const { text } = await generateText({ model, tools, prompt, stopWhen: stepCountIs(5) });
 * ```
 *
 * The conventions of the Python adapters (client/mcp_handshake/client/adapters):
 * - names: each `.` of a tool name becomes `__` (`payments.create_invoice` ->
 *   `payments__create_invoice`); a name that already holds `__` is refused;
 * - a tool returns `{status: "ok", result, transaction_id, receipt}` (the receipt
 *   verified), `{status: "error", code, message, transaction_id}` (a protocol error:
 *   the model sees why, nothing is thrown into the agent loop), or, for an operation
 *   still undecided after `approvalWaitMs`, `{status: "pending_approval",
 *   transaction_id, message}`; the extra tool `handshake_wait` (`{transaction_id}`)
 *   waits again with the same bound and runs the operation once approved.
 */

import { jsonSchema, tool, type Tool } from "ai";
import type { HandshakeClient, Params, PendingCall } from "./client.js";
import { ApprovalPending, HandshakeError } from "./errors.js";
import type { ToolInfo } from "./types.js";

/** How long a restricted tool waits for a decision before answering "pending". */
export const DEFAULT_APPROVAL_WAIT_MS = 30_000;
/** The follow-up tool: wait again for a pending transaction. */
export const WAIT_TOOL = "handshake_wait";

const WAIT_SCHEMA = {
  type: "object",
  properties: { transaction_id: { type: "string" } },
  required: ["transaction_id"],
  additionalProperties: false,
} as const;

const HOST_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** `payments.create_invoice` -> `payments__create_invoice` (reversible). */
export function hostName(name: string): string {
  if (name.includes("__")) {
    throw new TypeError(
      `tool name ${JSON.stringify(name)} holds '__' and cannot be mapped reversibly`,
    );
  }
  const host = name.replaceAll(".", "__");
  if (!HOST_NAME.test(host)) {
    throw new TypeError(
      `tool name ${JSON.stringify(name)} is not a valid function name once mapped`,
    );
  }
  return host;
}

/** The inverse of `hostName`. */
export function toolName(host: string): string {
  return host.replaceAll("__", ".");
}

export interface AiSdkToolsOptions {
  /** The catalog to expose (default: `await hs.tools()`, what this session may use). */
  tools?: ToolInfo[];
  /** How long a call waits for approval before answering pending (default 30 s). */
  approvalWaitMs?: number;
}

export type ToolOutput =
  | { status: "ok"; result: unknown; transaction_id: string; receipt: string }
  | { status: "pending_approval"; transaction_id: string; message: string }
  | { status: "error"; code: string; message: string; transaction_id: string | null };

/** One AI SDK tool per tool this session may use, plus `handshake_wait`; each call is a
 * full handshake through `hs`. */
export async function aiSdkTools(
  hs: HandshakeClient,
  opts: AiSdkToolsOptions = {},
): Promise<Record<string, Tool<Params, ToolOutput>>> {
  const waitMs = opts.approvalWaitMs ?? DEFAULT_APPROVAL_WAIT_MS;
  if (!(waitMs > 0)) throw new RangeError("approvalWaitMs must be a positive number");
  const infos = opts.tools ?? (await hs.tools());
  const pending = new Map<string, PendingCall>();
  const out: Record<string, Tool<Params, ToolOutput>> = {};
  for (const info of infos) {
    out[hostName(info.name)] = tool<Params, ToolOutput>({
      description: describe(info),
      inputSchema: jsonSchema<Params>(info.params_schema as Parameters<typeof jsonSchema>[0]),
      execute: async (params) => run(hs, pending, waitMs, () => hs.submit(info.name, params ?? {})),
    });
  }
  out[WAIT_TOOL] = tool<Params, ToolOutput>({
    description:
      "Wait again for an operation that answered pending_approval; runs it once approved " +
      "and returns its result, or pending_approval again.",
    inputSchema: jsonSchema<Params>(WAIT_SCHEMA),
    execute: async (params) => {
      const txn = String(params?.transaction_id ?? "");
      const call = pending.get(txn);
      if (call === undefined)
        return error("invalid_transaction", "no pending call with this id", txn);
      return run(hs, pending, waitMs, async () => call);
    },
  });
  return out;
}

function describe(info: ToolInfo): string {
  let tier = ` [tier: ${info.tier}`;
  if (info.tier === "restricted") {
    tier += "; needs approval, may answer pending_approval with a transaction_id";
  }
  return `${info.description}${tier}]`;
}

async function run(
  hs: HandshakeClient,
  pending: Map<string, PendingCall>,
  waitMs: number,
  start: () => Promise<PendingCall>,
): Promise<ToolOutput> {
  let call: PendingCall | undefined;
  try {
    call = await start();
    const res = await hs.wait(call, waitMs);
    pending.delete(res.transactionId);
    return {
      status: "ok",
      result: res.result,
      transaction_id: res.transactionId,
      receipt: res.receipt,
    };
  } catch (err) {
    if (err instanceof ApprovalPending && call !== undefined) {
      pending.set(call.transactionId, call);
      return {
        status: "pending_approval",
        transaction_id: call.transactionId,
        message: `${call.tool} is waiting for approval; call ${WAIT_TOOL} with this transaction_id to follow up`,
      };
    }
    if (err instanceof HandshakeError) {
      if (call !== undefined) pending.delete(call.transactionId);
      return error(err.code, err.message, err.transactionId);
    }
    throw err;
  }
}

function error(code: string, message: string, transactionId: string | null): ToolOutput {
  return { status: "error", code, message, transaction_id: transactionId };
}
