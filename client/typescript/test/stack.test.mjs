// Against a real stack (tests/test_typescript.py starts it): every tier over the gateway
// and over NATS, replay and param substitution refused, receipts verified, approvals.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  ApprovalDenied,
  ApprovalPending,
  Forbidden,
  HandshakeClient,
  HandshakeError,
  InvalidParams,
  InvalidTransaction,
  Unauthenticated,
  Unavailable,
  UnknownTool,
  ValidationFailed,
} from "../dist/index.js";
import { approveWhenListed, client, F, TRANSPORTS, waitListed, where } from "./support.mjs";

const RATE = { base: "EUR", quote: "USD" };
const INVOICE = { customer_id: "cus_8f3k2m9q", amount: 250, currency: "EUR" };
/** How a mismatching execute is refused: both burn the token. */
const REFUSED = { http: InvalidTransaction, nats: ValidationFailed };
const payment = (amount) => ({ to_account: "acct_4f9d2a", amount, currency: "EUR" });

for (const t of TRANSPORTS) {
  describe(`over ${t === "http" ? "the gateway" : "NATS"}`, () => {
    const open = [];
    const use = async (name, extra) => {
      const hs = await client(t, name, extra);
      open.push(hs);
      return hs;
    };
    let approver;
    before(async () => {
      approver = await client("nats", "approver"); // approvals over NATS until the gateway serves them
      open.push(approver);
    });
    after(async () => {
      for (const hs of open) await hs.close();
    });

    it("public tier: both phases, receipt verified, status executed", async () => {
      const hs = await use(`${t}-public`);
      const res = await hs.call("payments.get_exchange_rate", RATE);
      assert.equal(res.claims.tier, "public");
      assert.equal(res.claims.txn, res.transactionId);
      assert.equal(res.claims.sub, F.subs[`${t}-public`]);
      assert.equal((await hs.status(res.transactionId)).status, "executed");
    });

    for (const name of [`${t}-billing`, `${t}-billing-p256`]) {
      it(`internal tier with a proof (${name.endsWith("p256") ? "P-256" : "Ed25519"} key)`, async () => {
        const hs = await use(name);
        const res = await hs.call("payments.list_invoices", {});
        assert.equal(res.claims.tier, "internal");
        assert.ok(Array.isArray(res.result) || typeof res.result === "object");
      });
    }

    it("internal tier without a proof key is refused before anything is sent", async () => {
      const hs = await use(`${t}-billing`, { proofKey: undefined });
      const grant = await hs.authorize("payments.list_invoices", {});
      await assert.rejects(hs.execute(grant, "payments.list_invoices", {}), ValidationFailed);
    });

    it("confidential tier: the result is masked", async () => {
      const hs = await use(`${t}-support`);
      const res = await hs.call("customers.get_customer", { customer_id: "cus_8f3k2m9q" });
      assert.equal(res.claims.tier, "confidential");
      assert.equal(res.result.email, "j***@example.com");
      assert.equal(res.result.card_number, "************4242");
    });

    it("restricted tier: approved by the confirmation agent", async () => {
      const hs = await use(`${t}-treasury`);
      const res = await hs.call("payments.send_payment", payment(20));
      assert.equal(res.claims.tier, "restricted");
      assert.deepEqual(
        res.claims.approvals.map((a) => a.by),
        ["confirmation-agent"],
      );
    });

    it("restricted tier: pending, approved by a human (signed decision), then executed", async () => {
      const hs = await use(`${t}-treasury`);
      const pending = await hs.submit("payments.send_payment", payment(2500));
      assert.equal(pending.grant.status, "pending_approval");
      const early = await hs
        .execute(pending.grant, "payments.send_payment", payment(2500))
        .catch((e) => e);
      assert.ok(early instanceof ApprovalPending, String(early));
      assert.equal(early.status, 409);
      assert.equal(early.retryable, true);
      await assert.rejects(hs.waitForApproval(pending.grant, 300), ApprovalPending);
      const waiting = hs.wait(pending, 30_000); // long-polls status, then executes
      const txn = pending.transactionId;
      await waitListed(approver, txn);
      // a bound approver's decision must be signed, over the preview the approver saw
      await assert.rejects(
        approver.approvals.decide(txn, "approve", { sign: false }),
        ValidationFailed,
      );
      const otherPreview = { previewHash: `sha256:${"0".repeat(64)}` };
      await assert.rejects(
        approver.approvals.decide(txn, "approve", otherPreview),
        ValidationFailed,
      );
      const requester = await client("nats", `${t}-treasury`); // approvals over NATS
      open.push(requester);
      await assert.rejects(requester.approvals.decide(txn, "approve"), Forbidden); // own, no role
      const decided = await approver.approvals.decide(txn, "approve");
      assert.equal(decided.status, "approved");
      const res = await waiting;
      assert.deepEqual(
        res.claims.approvals.map((a) => a.by),
        [F.subs.approver],
      );
    });

    it("restricted tier: denied", async () => {
      const hs = await use(`${t}-treasury`);
      const err = await hs.call("payments.send_payment", payment(75_000)).catch((e) => e);
      assert.ok(err instanceof ApprovalDenied, String(err));
      assert.equal(err.status, 403);
    });

    it("a replayed token is refused", async () => {
      const hs = await use(`${t}-billing`);
      const grant = await hs.authorize("payments.create_invoice", INVOICE);
      await hs.execute(grant, "payments.create_invoice", INVOICE);
      const err = await hs.execute(grant, "payments.create_invoice", INVOICE).catch((e) => e);
      assert.ok(err instanceof InvalidTransaction, String(err));
      assert.equal(err.status, 409);
    });

    it("substituted params are refused, and the token is burnt", async () => {
      const hs = await use(`${t}-billing`);
      const grant = await hs.authorize("payments.create_invoice", INVOICE);
      const other = { ...INVOICE, amount: 9999 };
      // Over NATS the proof signs the authorized params' hash, so the proof check refuses
      // first; over the gateway the DPoP proof binds the request, and the binding refuses.
      await assert.rejects(hs.execute(grant, "payments.create_invoice", other), REFUSED[t]);
      await assert.rejects(
        hs.execute(grant, "payments.create_invoice", INVOICE),
        InvalidTransaction,
      );
      assert.equal((await hs.status(grant.transaction_id)).status, "invalidated");
    });

    it("another tool under the same token is refused", async () => {
      const hs = await use(`${t}-billing`);
      const grant = await hs.authorize("payments.list_invoices", {});
      await assert.rejects(hs.execute(grant, "payments.create_invoice", INVOICE), REFUSED[t]);
      await assert.rejects(hs.execute(grant, "payments.list_invoices", {}), InvalidTransaction); // burnt
    });

    it("a receipt for another result or transaction is refused", async () => {
      const hs = await use(`${t}-public`);
      const grant = await hs.authorize("payments.get_exchange_rate", RATE);
      const res = await hs.execute(grant, "payments.get_exchange_rate", RATE);
      await assert.rejects(
        hs.verifyReceipt(res.receipt, { rate: 0 }, grant, "payments.get_exchange_rate"),
        InvalidTransaction,
      );
      const forged = res.receipt.slice(0, -4) + (res.receipt.endsWith("AAAA") ? "BBBB" : "AAAA");
      await assert.rejects(
        hs.verifyReceipt(forged, res.result, grant, "payments.get_exchange_rate"),
        ValidationFailed,
      );
    });

    it("tools lists exactly this session's tools", async () => {
      const names = (await (await use(`${t}-billing`)).tools()).map((x) => x.name).sort();
      assert.ok(
        names.includes("payments.create_invoice") && names.includes("payments.list_invoices"),
      );
      assert.ok(
        !names.includes("payments.send_payment") && !names.includes("customers.get_customer"),
      );
    });

    it("protocol errors arrive as their classes", async () => {
      const hs = await use(`${t}-public`);
      await assert.rejects(hs.authorize("no.such_tool", {}), UnknownTool);
      await assert.rejects(hs.authorize("payments.send_payment", payment(1)), Forbidden);
      await assert.rejects(
        hs.authorize("payments.get_exchange_rate", { base: "EUR" }),
        InvalidParams,
      );
      const stranger = await use(`${t}-public`, { session: "not-a-jwt" });
      const err = await stranger.tools().catch((e) => e);
      assert.ok(err instanceof Unauthenticated, String(err));
      assert.equal(err.status, 401);
    });

    it("reconcile reaches the service and answers a protocol error for a settled transaction", async () => {
      const hs = await use(`${t}-billing`);
      const res = await hs.call("payments.list_invoices", {});
      const err = await hs.reconcile(res.transactionId).catch((e) => e);
      assert.ok(err instanceof HandshakeError, String(err));
      assert.ok(["invalid_transaction", "forbidden"].includes(err.code), err.code);
    });

    it("sessions from a file and a command", async () => {
      const s = F.sessions[`${t}-public`];
      for (const session of [{ file: s.file }, { command: ["cat", s.file] }]) {
        const hs = await use(`${t}-public`, { session });
        assert.ok((await hs.tools()).length > 0);
      }
    });
  });
}

describe("approvals over the gateway", () => {
  it("list and decide (signed) over GET /v1/approvals and POST .../decide", async () => {
    const http = await client("http", "approver");
    const tess = await client("nats", "nats-treasury");
    try {
      const first = await http.approvals.list();
      assert.ok(Array.isArray(first), String(first));
      const pending = await tess.submit("payments.send_payment", payment(2600));
      const decided = await approveWhenListed(http, pending.transactionId);
      assert.equal(decided.status, "approved");
      const res = await tess.wait(pending, 20_000);
      assert.deepEqual(
        res.claims.approvals.map((a) => a.by),
        [F.subs.approver],
      );
    } finally {
      await http.close();
      await tess.close();
    }
  });
});

describe("a gateway requiring DPoP nonces", () => {
  it("the first execute learns the nonce without using the token, and the retry runs", async () => {
    for (const name of ["http-billing", "http-billing-p256"]) {
      const hs = await client("http", name, { gatewayUrl: F.nonceGatewayUrl });
      try {
        const first = await hs.call("payments.list_invoices", {}); // refused once, retried
        assert.equal(first.claims.tier, "internal");
        const second = await hs.call("payments.list_invoices", {}); // the nonce it was given
        assert.notEqual(second.transactionId, first.transactionId);
      } finally {
        await hs.close();
      }
    }
  });
});

describe("connecting", () => {
  it("NATS refuses a wrong password: Unauthenticated", async () => {
    const err = await HandshakeClient.connect({
      ...where("nats"),
      natsPasswordFile: undefined,
      natsPassword: "wrong",
      session: "x",
    }).catch((e) => e);
    assert.ok(err instanceof Unauthenticated, String(err));
  });

  it("no server: Unavailable, over either transport", async () => {
    const err = await HandshakeClient.connect({
      natsUrl: F.deadUrl.replace("http", "nats"),
      session: "x",
    }).catch((e) => e);
    assert.ok(err instanceof Unavailable, String(err));
    const hs = await HandshakeClient.connect({ gatewayUrl: F.deadUrl, session: "x" });
    await assert.rejects(hs.tools(), Unavailable);
  });

  it("exactly one of gatewayUrl and natsUrl", async () => {
    await assert.rejects(HandshakeClient.connect({ session: "x" }), TypeError);
    await assert.rejects(
      HandshakeClient.connect({ ...where("http"), ...where("nats"), session: "x" }),
      TypeError,
    );
  });
});
