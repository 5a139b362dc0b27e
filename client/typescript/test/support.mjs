// What the stack tests share: the fixtures tests/test_typescript.py wrote (URLs, session
// tokens, key paths), clients over either transport, and an approver.

import { readFileSync } from "node:fs";
import { HandshakeClient, ProofKey } from "../dist/index.js";

const path = process.env.HS_FIXTURES;
if (!path) throw new Error("HS_FIXTURES is not set: run these tests from tests/test_typescript.py");
export const F = JSON.parse(readFileSync(path, "utf8"));
export const TRANSPORTS = ["http", "nats"];

export function where(transport) {
  return transport === "http"
    ? { gatewayUrl: F.gatewayUrl }
    : { natsUrl: F.natsUrl, natsUser: F.natsUser, natsPasswordFile: F.natsPasswordFile };
}

/** A client over `transport` with the session named `name` and its proof key. */
export async function client(transport, name, extra = {}) {
  const s = F.sessions[name];
  if (s === undefined) throw new Error(`no session ${name} in the fixtures`);
  const proofKey = s.key ? await ProofKey.load(s.key) : undefined;
  return HandshakeClient.connect({ ...where(transport), session: s.token, proofKey, ...extra });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolve once `txn` is on the approver's list. */
export async function waitListed(approver, txn) {
  for (let i = 0; i < 100; i += 1) {
    if ((await approver.approvals.list()).some((a) => a.transaction_id === txn)) return;
    await sleep(100);
  }
  throw new Error("the transaction never reached the approvers' list");
}

/** Approve `txn` as soon as the approver's list shows it (a signed decision: the
 * approver's session is bound to its key). */
export async function approveWhenListed(approver, txn) {
  await waitListed(approver, txn);
  return approver.approvals.decide(txn, "approve");
}
