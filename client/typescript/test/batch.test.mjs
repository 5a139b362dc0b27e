// Batches against a real stack (tests/test_typescript.py starts it): callMany and stream
// over NATS (authorize.batch, execute.batch, one batch proof) and over the gateway, the
// batch proof's attacks, the receipts of a batch verified each alone, and the fallback to
// single calls where no batch worker answers.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import {
  base64url,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  SignJWT,
} from "jose";
import {
  ApprovalPending,
  BadRequest,
  BATCH_PROOF_TYP,
  HandshakeClient,
  HandshakeError,
  InvalidParams,
  InvalidTransaction,
  ProofKey,
  Unauthenticated,
  UnknownTool,
  ValidationFailed,
  paramsHash,
  proofOps,
  sha256Tagged,
} from "../dist/index.js";
import { client, F, sleep, TRANSPORTS } from "./support.mjs";

const OVER = { nats: "NATS", http: "the gateway" };
/** The header that proves an execute batch: a batch proof, or a DPoP proof of the request. */
const PROOF = { nats: "Handshake-Proof", http: "DPoP" };

const EXCHANGE = "payments.get_exchange_rate";
const INVOICES = "payments.list_invoices";
const CREATE = "payments.create_invoice";
const SEND = "payments.send_payment";
const RATE = { base: "EUR", quote: "USD" };
const INVOICE = { customer_id: "cus_8f3k2m9q", amount: 250, currency: "EUR" };
const payment = (amount) => ({ to_account: "acct_4f9d2a", amount, currency: "EUR" });
const isResult = (o) => !(o instanceof Error) && typeof o.receipt === "string";

/** Records each request's operation, and the proof headers each sent. */
function spy(hs) {
  const t = hs.transport;
  const request = t.request.bind(t);
  const seen = { ops: [], proofs: [] };
  t.request = async (req) => {
    seen.ops.push(req.op);
    if (req.proof !== undefined) {
      const sign = req.proof;
      req = {
        ...req,
        proof: async (ctx) => {
          const headers = await sign(ctx);
          seen.proofs.push({ op: req.op, headers });
          return headers;
        },
      };
    }
    return request(req);
  };
  return seen;
}
const count = (ops, op) => ops.filter((o) => o === op).length;

/** The demo target's count of side effects (invoices created, payments sent). */
async function sideEffects() {
  const key = readFileSync(F.targetKeyFile, "utf8").trim();
  const res = await fetch(`${F.targetUrl}/_stats`, { headers: { "X-API-Key": key } });
  return (await res.json()).side_effects;
}

/** Approve the first pending `tool` request of `sub`, once the approver's list shows it. */
async function approveOf(approver, sub, tool) {
  for (let i = 0; i < 150; i += 1) {
    const mine = (await approver.approvals.list()).find((a) => a.sub === sub && a.tool === tool);
    if (mine !== undefined) {
      const decided = await approver.approvals.decide(mine.transaction_id, "approve");
      assert.equal(decided.status, "approved");
      return mine.transaction_id;
    }
    await sleep(100);
  }
  throw new Error("the request never reached the approvers' list");
}

const open = [];
const use = async (transport, name, extra) => {
  const hs = await client(transport, name, extra);
  open.push(hs);
  return hs;
};
let approver;
before(async () => {
  approver = await use("nats", "approver");
});
after(async () => {
  for (const hs of open) await hs.close();
});

for (const t of TRANSPORTS) {
  describe(`callMany and stream over ${OVER[t]}`, () => {
    it("a mixed batch: public, internal under one proof, restricted approved by an approver", async () => {
      const hs = await use(t, `${t}-ops`);
      const seen = spy(hs);
      const calls = [
        [EXCHANGE, RATE],
        [INVOICES, {}],
        [SEND, payment(2500)], // above the confirmation agent's limit: a human decides
        ["no.such_tool", {}],
        [EXCHANGE, { base: "EUR" }],
        [CREATE, INVOICE],
      ];
      const running = hs.callMany(calls, { concurrency: 8 });
      const txn = await approveOf(approver, F.subs[`${t}-ops`], SEND);
      const outcomes = await running;
      assert.equal(outcomes.length, calls.length);
      assert.deepEqual(
        [0, 1, 2, 5].map((k) => outcomes[k].claims?.tool),
        [EXCHANGE, INVOICES, SEND, CREATE],
      );
      assert.deepEqual(
        [0, 1, 2, 5].map((k) => outcomes[k].claims.tier),
        ["public", "internal", "restricted", "internal"],
      );
      assert.equal(outcomes[2].transactionId, txn);
      assert.deepEqual(
        outcomes[2].claims.approvals.map((a) => a.by),
        [F.subs.approver],
      );
      assert.ok(outcomes[3] instanceof UnknownTool, String(outcomes[3]));
      assert.ok(outcomes[4] instanceof InvalidParams, String(outcomes[4]));
      for (const k of [0, 1, 2, 5]) assert.equal(outcomes[k].claims.sub, F.subs[`${t}-ops`]);
      // one authorize.batch, one execute.batch for the three granted at once; the restricted
      // one executed alone once approved; no single authorize
      assert.equal(count(seen.ops, "authorize.batch"), 1);
      assert.equal(count(seen.ops, "execute.batch"), 1);
      assert.equal(count(seen.ops, "authorize"), 0);
      assert.equal(count(seen.ops, "execute"), 1);
      // one proof for the whole execute batch
      const proofs = seen.proofs.filter((p) => p.op === "execute.batch");
      assert.equal(proofs.length, 1);
      const { headers } = proofs[0];
      if (t === "nats") {
        // a batch proof naming the two internal operations, exactly the protocol's claims
        const jws = headers["Handshake-Proof"];
        const header = decodeProtectedHeader(jws);
        assert.equal(header.typ, BATCH_PROOF_TYP);
        assert.equal(header.alg, "EdDSA");
        assert.deepEqual(header.jwk, hs.proofKey.publicJwk);
        const claims = decodeJwt(jws);
        assert.deepEqual(Object.keys(claims), ["ops", "iat", "jti"]);
        const internal = [1, 5].map((k) => [outcomes[k].transactionId, outcomes[k].claims.ph]);
        assert.deepEqual(claims.ops, proofOps(internal));
      } else {
        // a DPoP proof of the batch request (docs/gateway.md, "Batches")
        assert.deepEqual(Object.keys(headers), ["DPoP"]);
        const header = decodeProtectedHeader(headers.DPoP);
        assert.equal(header.typ, "dpop+jwt");
        assert.deepEqual(header.jwk, hs.proofKey.publicJwk);
        const claims = decodeJwt(headers.DPoP);
        assert.equal(claims.htm, "POST");
        assert.equal(claims.htu, `${F.gatewayUrl}/v1/execute/batch`);
        assert.equal(typeof claims.ath, "string");
      }
    });

    it("a P-256 proof key signs the proof ES256", async () => {
      const hs = await use(t, `${t}-ops-p256`);
      const seen = spy(hs);
      const calls = [
        [INVOICES, {}],
        [INVOICES, { status: "open" }],
        [CREATE, INVOICE],
      ];
      const outcomes = await hs.callMany(calls);
      assert.ok(outcomes.every(isResult), String(outcomes));
      assert.deepEqual(
        outcomes.map((o) => o.claims.tier),
        ["internal", "internal", "internal"],
      );
      const [batchProof] = seen.proofs.filter((p) => p.op === "execute.batch");
      const jws = batchProof.headers[PROOF[t]];
      assert.equal(decodeProtectedHeader(jws).alg, "ES256");
      if (t === "nats") assert.equal(decodeJwt(jws).ops.length, 3);
    });

    it("stream: a lazy source, at most `concurrency` in flight, batched, each outcome once", async () => {
      const hs = await use(t, `${t}-billing`);
      const seen = spy(hs);
      let pulled = 0;
      async function* source() {
        for (let n = 0; n < 12; n += 1) {
          pulled += 1;
          yield n % 2 === 0
            ? [EXCHANGE, { base: "EUR", quote: ["USD", "GBP"][(n % 4) >> 1] }]
            : [INVOICES, {}];
        }
      }
      const got = new Map();
      for await (const [i, outcome] of hs.stream(source(), { concurrency: 4 })) {
        assert.ok(!got.has(i));
        assert.ok(pulled - got.size <= 4, "more than 4 in flight");
        got.set(i, outcome);
      }
      assert.deepEqual(
        [...got.keys()].sort((a, b) => a - b),
        [...Array(12).keys()],
      );
      assert.ok([...got.values()].every(isResult), String([...got.values()]));
      const batches = count(seen.ops, "execute.batch");
      assert.ok(batches >= 3 && batches < 12, String(batches));
      assert.equal(count(seen.ops, "execute"), 0);
    });

    it("a session the mediator refuses: every outcome Unauthenticated, nothing thrown", async () => {
      const hs = await use(t, `${t}-public`, { session: "not-a-jwt" });
      const outcomes = await hs.callMany([
        [EXCHANGE, RATE],
        [EXCHANGE, RATE],
      ]);
      assert.ok(
        outcomes.every((o) => o instanceof Unauthenticated),
        String(outcomes),
      );
      await assert.rejects(hs.authorizeBatch([{ tool: EXCHANGE, params: RATE }]), Unauthenticated);
    });
  });

  describe(`authorizeBatch and executeBatch over ${OVER[t]}, attacked`, () => {
    const opsOf = (grants, calls) =>
      grants.map((grant, k) => ({ grant, tool: calls[k][0], params: calls[k][1] }));
    const authorize = async (hs, calls) => {
      const grants = await hs.authorizeBatch(calls.map(([tool, params]) => ({ tool, params })));
      for (const g of grants) assert.ok(!(g instanceof Error), String(g));
      return opsOf(grants, calls);
    };

    it("the same token in two concurrent batches (and twice in one) runs once", async () => {
      const hs = await use(t, `${t}-billing`);
      const [op] = await authorize(hs, [[CREATE, INVOICE]]);
      const before = await sideEffects();
      const runs = await Promise.all([0, 1, 2, 3].map(() => hs.executeBatch([op])));
      const outcomes = runs.map((r) => r[0]);
      assert.equal(outcomes.filter(isResult).length, 1, String(outcomes));
      assert.equal(outcomes.filter((o) => o instanceof InvalidTransaction).length, 3);
      assert.equal((await sideEffects()) - before, 1);
      const [again] = await authorize(hs, [[CREATE, INVOICE]]);
      const twice = await hs.executeBatch([again, again, again]);
      assert.equal(twice.filter(isResult).length, 1, String(twice));
      // Each other copy is refused: its token is used up, and the jti the batch proof
      // claims for that transaction is taken already (whichever the mediator checks first).
      const refused = twice.filter(
        (o) => o instanceof InvalidTransaction || o instanceof ValidationFailed,
      );
      assert.equal(refused.length, 2, twice.map(String).join());
      assert.equal((await sideEffects()) - before, 2);
    });

    it("a batch proof covering fewer operations refuses only the uncovered ones above public", async () => {
      const hs = await use(t, `${t}-billing`);
      const calls = [
        [INVOICES, { status: "paid", limit: 20 }],
        [INVOICES, { status: "open", limit: 20 }],
        [INVOICES, { status: null, limit: 20 }],
        [EXCHANGE, RATE],
      ];
      const ops = await authorize(hs, calls);
      assert.deepEqual(
        ops.map((o) => o.grant.tier),
        ["internal", "internal", "internal", "public"],
      );
      const covered = ops.slice(0, 2).map((o) => [o.grant.transaction_id, o.grant.params_hash]);
      const proof = await hs.proofKey.signBatch(covered);
      const outcomes = await hs.executeBatch(ops, { proof });
      assert.ok(isResult(outcomes[0]) && isResult(outcomes[1]), String(outcomes));
      assert.ok(outcomes[2] instanceof ValidationFailed, String(outcomes[2]));
      assert.ok(isResult(outcomes[3]), String(outcomes[3])); // public: needs no proof
      // the uncovered one's token is used up, as by a refused single proof
      const [late] = await hs.executeBatch([ops[2]]); // now with a proof covering it
      assert.ok(late instanceof InvalidTransaction, String(late));
      assert.equal((await hs.status(ops[2].grant.transaction_id)).status, "invalidated");
    });

    it("a batch proof by a key the session is not bound to refuses every operation", async () => {
      const hs = await use(t, `${t}-billing`);
      const ops = await authorize(hs, [
        [INVOICES, {}],
        [EXCHANGE, RATE],
      ]);
      const stranger = await ProofKey.generate();
      const proof = await stranger.signBatch(
        ops.map((o) => [o.grant.transaction_id, o.grant.params_hash]),
      );
      const outcomes = await hs.executeBatch(ops, { proof });
      assert.ok(
        outcomes.every((o) => o instanceof ValidationFailed),
        String(outcomes),
      );
    });

    it("a replayed batch proof proves nothing more", async () => {
      const hs = await use(t, `${t}-billing`);
      const first = await authorize(hs, [[INVOICES, {}]]);
      const pairs = first.map((o) => [o.grant.transaction_id, o.grant.params_hash]);
      const proof = await hs.proofKey.signBatch(pairs);
      assert.ok(isResult((await hs.executeBatch(first, { proof }))[0]));
      const second = await authorize(hs, [[INVOICES, {}]]);
      const [replayed] = await hs.executeBatch(second, { proof }); // names another txn
      assert.ok(replayed instanceof ValidationFailed, String(replayed));
    });

    it("without a proof key, operations above public are refused unsent (their tokens unused)", async () => {
      const keyless = await use(t, `${t}-billing`, { proofKey: undefined });
      const ops = await authorize(keyless, [
        [INVOICES, {}],
        [EXCHANGE, RATE],
      ]);
      const [refused, ran] = await keyless.executeBatch(ops);
      assert.ok(refused instanceof ValidationFailed, String(refused));
      assert.ok(isResult(ran), String(ran));
      const keyed = await use(t, `${t}-billing`); // same session, with its key
      const res = await keyed.execute(ops[0].grant, INVOICES, {});
      assert.equal(res.claims.tier, "internal");
    });

    it("a restricted operation still pending answers ApprovalPending without using its token", async () => {
      const hs = await use(t, `${t}-treasury`);
      const ops = await authorize(hs, [[SEND, payment(2700)]]);
      assert.equal(ops[0].grant.status, "pending_approval");
      const [early] = await hs.executeBatch(ops);
      assert.ok(early instanceof ApprovalPending, String(early));
      assert.equal(early.retryable, true);
      await approveOf(approver, F.subs[`${t}-treasury`], SEND);
      const [done] = await hs.executeBatch(ops);
      assert.ok(isResult(done), String(done));
      assert.deepEqual(
        done.claims.approvals.map((a) => a.by),
        [F.subs.approver],
      );
    });

    it("each receipt of a batch verifies alone; a tampered or swapped one is refused", async () => {
      const hs = await use(t, `${t}-public`);
      const calls = [
        [EXCHANGE, RATE],
        [EXCHANGE, { base: "EUR", quote: "GBP" }],
      ];
      const ops = await authorize(hs, calls);
      const [a, b] = await hs.executeBatch(ops, { receipts: "single" });
      assert.ok(isResult(a) && isResult(b));
      const [ga, gb] = ops.map((o) => o.grant);
      assert.equal(
        (await hs.verifyReceipt(a.receipt, a.result, ga, EXCHANGE)).txn,
        ga.transaction_id,
      );
      assert.equal(
        (await hs.verifyReceipt(b.receipt, b.result, gb, EXCHANGE)).txn,
        gb.transaction_id,
      );
      // another operation's receipt, for this one's result and grant
      await assert.rejects(hs.verifyReceipt(b.receipt, a.result, ga, EXCHANGE), InvalidTransaction);
      // a result altered under a valid receipt
      await assert.rejects(
        hs.verifyReceipt(a.receipt, { ...a.result, rate: 0 }, ga, EXCHANGE),
        InvalidTransaction,
      );
      // this receipt's claims under the other's signature
      const [h, p] = a.receipt.split(".");
      const spliced = `${h}.${p}.${b.receipt.split(".")[2]}`;
      await assert.rejects(hs.verifyReceipt(spliced, a.result, ga, EXCHANGE), ValidationFailed);
      // its claims rewritten to cover the other result, the signature kept
      const claims = { ...decodeJwt(a.receipt), rh: sha256Tagged(b.result) };
      const rewritten = `${h}.${base64url.encode(JSON.stringify(claims))}.${a.receipt.split(".")[2]}`;
      await assert.rejects(hs.verifyReceipt(rewritten, b.result, ga, EXCHANGE), ValidationFailed);
    });

    it("a batch reply with a tampered receipt: that operation refused, the others kept", async () => {
      const hs = await use(t, `${t}-public`);
      const tr = hs.transport;
      const request = tr.request.bind(tr);
      tr.request = async (req) => {
        const reply = await request(req);
        if (req.op === "execute.batch") {
          const [first, second, third] = reply.results;
          const [h, p, s] = first.receipt.split(".");
          first.receipt = `${h}.${p}.${s.startsWith("A") ? "B" : "A"}${s.slice(1)}`;
          [second.receipt, third.receipt] = [third.receipt, second.receipt]; // swapped
        }
        return reply;
      };
      const quotes = ["USD", "GBP", "JPY", "CHF"];
      const ops = await authorize(
        hs,
        quotes.map((quote) => [EXCHANGE, { base: "EUR", quote }]),
      );
      const outcomes = await hs.executeBatch(ops, { receipts: "single" });
      assert.ok(outcomes[0] instanceof ValidationFailed, String(outcomes[0]));
      assert.ok(outcomes[1] instanceof InvalidTransaction, String(outcomes[1]));
      assert.ok(outcomes[2] instanceof InvalidTransaction, String(outcomes[2]));
      assert.ok(isResult(outcomes[3]), String(outcomes[3]));
      assert.equal(outcomes[3].claims.txn, ops[3].grant.transaction_id);
    });

    const QUOTES = ["USD", "GBP", "JPY", "CHF", "CAD"];
    const flip = (hex) => (hex[0] === "0" ? "1" : "0") + hex.slice(1);

    it("a Merkle batch: one signed root, each receipt verified alone; tampered ones refused alone", async () => {
      const hs = await use(t, `${t}-public`);
      const tr = hs.transport;
      const request = tr.request.bind(tr);
      const bodies = [];
      const stranger = await generateKeyPair("Ed25519");
      tr.request = async (req) => {
        const reply = await request(req);
        if (req.op !== "execute.batch") return reply;
        bodies.push(req.body);
        if (bodies.length > 1) return reply; // the first batch only
        const r = reply.results;
        r[0].inclusion.path[0] = flip(r[0].inclusion.path[0]); // path altered
        [r[1].result, r[2].result] = [r[2].result, r[1].result]; // results swapped
        return reply;
      };
      const calls = QUOTES.map((quote) => [EXCHANGE, { base: "EUR", quote }]);
      const ops = await authorize(hs, calls);
      const outcomes = await hs.executeBatch(ops);
      assert.equal(bodies[0].receipts, "merkle");
      assert.ok(outcomes[0] instanceof ValidationFailed, String(outcomes[0]));
      assert.ok(outcomes[1] instanceof InvalidTransaction, String(outcomes[1]));
      assert.ok(outcomes[2] instanceof InvalidTransaction, String(outcomes[2]));
      assert.ok(isResult(outcomes[3]) && isResult(outcomes[4]));
      const [d, e] = [outcomes[3], outcomes[4]];
      const [gd, ge] = [ops[3].grant, ops[4].grant];
      const own = JSON.parse(d.receipt);
      assert.equal(own.root, JSON.parse(e.receipt).root); // one root for the batch
      assert.equal(decodeProtectedHeader(own.root).typ, "handshake-batch-receipt+jwt");
      assert.equal(own.index, 3);
      assert.equal(decodeJwt(own.root).size, 5);
      assert.equal(
        (await hs.verifyReceipt(d.receipt, d.result, gd, EXCHANGE)).txn,
        gd.transaction_id,
      );
      const refused = async (receipt, why) =>
        assert.rejects(
          hs.verifyReceipt(JSON.stringify(receipt), d.result, gd, EXCHANGE),
          ValidationFailed,
          why,
        );
      // the root's claims and header signed by a key the mediator does not hold
      const resigned = await new SignJWT(decodeJwt(own.root))
        .setProtectedHeader(decodeProtectedHeader(own.root))
        .sign(stranger.privateKey);
      await refused({ ...own, root: resigned }, "root re-signed");
      await refused({ ...own, index: 4 }, "leaf moved");
      await refused({ ...own, leaf: JSON.parse(e.receipt).leaf }, "another operation's leaf");
      // a path from another batch
      const later = await hs.executeBatch(await authorize(hs, calls));
      const other = JSON.parse(later[3].receipt);
      await refused({ ...own, path: other.path }, "another batch's path");
      await refused({ ...other, root: own.root }, "another batch's leaf and path");
      // a root is no single receipt, and a single receipt no root
      await assert.rejects(hs.verifyReceipt(own.root, d.result, gd, EXCHANGE), ValidationFailed);
      const [single] = await hs.executeBatch(await authorize(hs, calls.slice(0, 1)), {
        receipts: "single",
      });
      await refused({ ...own, root: single.receipt }, "a single receipt as the root");
      assert.equal(
        (await hs.verifyReceipt(e.receipt, e.result, ge, EXCHANGE)).txn,
        ge.transaction_id,
      );
    });

    it("a mediator refusing the receipts field: asked again without, and never again", async () => {
      const hs = await use(t, `${t}-public`);
      const tr = hs.transport;
      const request = tr.request.bind(tr);
      const asked = [];
      tr.request = async (req) => {
        if (req.op === "execute.batch") {
          asked.push(req.body.receipts ?? null);
          if (req.body.receipts !== undefined) throw new BadRequest("unknown field `receipts`");
        }
        return request(req);
      };
      const calls = QUOTES.slice(0, 3).map((quote) => [EXCHANGE, { base: "EUR", quote }]);
      for (const outcomes of [await hs.callMany(calls), await hs.callMany(calls)]) {
        for (const o of outcomes) {
          assert.ok(isResult(o), String(o));
          assert.equal(decodeProtectedHeader(o.receipt).typ, "handshake-receipt+jwt");
        }
      }
      assert.deepEqual(asked, ["merkle", null, null]);
    });
  });
}

describe("a gateway requiring DPoP nonces", () => {
  it("the first execute batch learns the nonce without using a token, and the retry runs", async () => {
    for (const name of ["http-billing", "http-billing-p256"]) {
      const hs = await use("http", name, { gatewayUrl: F.nonceGatewayUrl });
      const seen = spy(hs);
      const outcomes = await hs.callMany([
        [INVOICES, {}],
        [INVOICES, { status: "open" }],
      ]);
      assert.ok(outcomes.every(isResult), String(outcomes));
      assert.equal(count(seen.ops, "execute.batch"), 1); // refused once, retried inside
      const nonces = seen.proofs.map((p) => decodeJwt(p.headers.DPoP).nonce);
      assert.ok(nonces.length <= 2, String(nonces.length));
      assert.equal(typeof nonces.at(-1), "string"); // the one that ran carried a nonce
    }
  });
});

describe("a mediator without batch workers (no responders)", () => {
  /** A fake mediator on a NATS of its own: single authorize, execute and keys only;
   * receipts signed (jose) by a key of its own. `batchAuthorize` serves authorize.batch
   * too (but still not execute.batch). */
  async function fakeMediator({ batchAuthorize = false } = {}) {
    const nc = await connect({ servers: F.plainNatsUrl });
    const { privateKey, publicKey } = await generateKeyPair("EdDSA", { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: "fake-1", alg: "EdDSA", use: "sig" };
    const seen = [];
    let n = 0;
    const grant = ({ tool, params }) => {
      if (tool === "no.such_tool") {
        return { error: { code: "unknown_tool", message: "unknown tool" } };
      }
      n += 1;
      return {
        transaction_id: `txn-${n}`,
        token: `tok-${n}`,
        status: "granted",
        tier: "public",
        params_hash: paramsHash(params),
        expires_at: Date.now() / 1000 + 60,
      };
    };
    const serve = (subject, answer) => {
      const sub = nc.subscribe(subject);
      (async () => {
        for await (const m of sub) {
          seen.push(subject.split(".").slice(2).join("."));
          const body = await answer(m.json());
          // a single call's error is flagged in a header, as the mediator's services do
          const hdrs = natsHeaders();
          if (body.error !== undefined) hdrs.set("Nats-Service-Error-Code", "404");
          m.respond(JSON.stringify(body), { headers: hdrs });
        }
      })();
    };
    serve("handshake.v1.keys", () => ({ keys: [jwk] }));
    serve("handshake.v1.authorize", grant);
    if (batchAuthorize) {
      serve("handshake.v1.authorize.batch", ({ ops }) => ({ results: ops.map(grant) }));
    }
    serve("handshake.v1.execute", async ({ transaction_id, tool, params }) => {
      const result = { echo: params };
      const receipt = await new SignJWT({
        iss: "fake",
        sub: "agent",
        txn: transaction_id,
        tool,
        tier: "public",
        ph: paramsHash(params),
        rh: sha256Tagged(result),
        auth_at: Date.now() / 1000,
        approvals: [],
      })
        .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid, typ: "handshake-receipt+jwt" })
        .setIssuedAt()
        .sign(privateKey);
      return { transaction_id, result, receipt };
    });
    await nc.flush();
    return { seen, close: () => nc.drain() };
  }

  for (const batchAuthorize of [false, true]) {
    const what = batchAuthorize ? "execute.batch" : "authorize.batch";
    it(`no responders for ${what}: callMany makes the calls alone, outcomes in order`, async () => {
      const fake = await fakeMediator({ batchAuthorize });
      const hs = await HandshakeClient.connect({ natsUrl: F.plainNatsUrl, session: "s" });
      try {
        const calls = [
          [EXCHANGE, RATE],
          ["no.such_tool", {}],
          [EXCHANGE, { base: "EUR", quote: "GBP" }],
        ];
        const outcomes = await hs.callMany(calls);
        assert.deepEqual(outcomes[0].result, { echo: RATE });
        assert.ok(outcomes[1] instanceof UnknownTool, String(outcomes[1]));
        assert.ok(outcomes[1] instanceof HandshakeError);
        assert.deepEqual(outcomes[2].result, { echo: calls[2][1] });
        const singles = fake.seen.filter((s) => s === "authorize").length;
        assert.equal(singles, batchAuthorize ? 0 : 3);
        assert.equal(fake.seen.filter((s) => s === "execute").length, 2);
      } finally {
        await hs.close();
        await fake.close();
      }
    });
  }
});
