// No stack needed: errors, session sources, key files, names, and the reference vectors
// in docs/vectors/ (checked as tests/test_vectors.py checks the service).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  calculateJwkThumbprint,
  compactVerify,
  decodeJwt,
  importJWK,
  SignJWT,
  UnsecuredJWT,
} from "jose";
import {
  ApprovalPending,
  BATCH_PROOF_TYP,
  HandshakeClient,
  OutcomeUnknown,
  Unavailable,
  asSessionProvider,
  canonicalJson,
  defaultAgentKey,
  optionsFromEnv,
  errorFromBody,
  ERRORS,
  HandshakeError,
  InternalError,
  InvalidTransaction,
  paramsHash,
  ProofKey,
  proofOps,
  RateLimited,
  sha256Tagged,
  UseDpopNonce,
  ValidationFailed,
  verifyReceipt,
  isBatchReceipt,
  leafHash,
  nodeHash,
  rootFromPath,
  tree,
  verifyBatchReceipt,
  verifyRoot,
} from "../dist/index.js";
import { hostName, toolName } from "../dist/ai.js";
import { Batcher, MAX_OPS } from "../dist/batch.js";

const VECTORS = new URL("../../../docs/vectors/", import.meta.url);
const load = (name) => JSON.parse(readFileSync(new URL(name, VECTORS), "utf8"));
const tmp = () => mkdtempSync(join(tmpdir(), "hs-ts-"));

describe("errors", () => {
  it("one class per protocol code, with code, status and retryable", () => {
    const table = {
      bad_request: 400,
      unauthenticated: 401,
      forbidden: 403,
      unknown_tool: 404,
      invalid_transaction: 409,
      approval_pending: 409,
      approval_denied: 403,
      payload_too_large: 413,
      invalid_params: 422,
      validation_failed: 422,
      rate_limited: 429,
      internal: 500,
      target_error: 502,
      unavailable: 503,
      outcome_unknown: 504,
    };
    for (const [code, status] of Object.entries(table)) {
      const err = errorFromBody({ error: { code, message: "m", transaction_id: "t1" } });
      assert.ok(err instanceof HandshakeError && err instanceof ERRORS[code]);
      assert.equal(err.code, code);
      assert.equal(err.status, status);
      assert.equal(err.transactionId, "t1");
      assert.equal(
        err.retryable,
        ["approval_pending", "rate_limited", "unavailable"].includes(code),
      );
    }
    assert.ok(
      errorFromBody({ error: { code: "no_such_code", message: "m" } }) instanceof InternalError,
    );
    assert.ok(errorFromBody("not an error body") instanceof InternalError);
  });

  it("keeps the server's retry hints and the DPoP nonce", () => {
    const body = {
      error: { code: "use_dpop_nonce", message: "m", retryable: true, retry_after_s: 1.5 },
    };
    const err = errorFromBody(body, { dpopNonce: "n-1" });
    assert.ok(err instanceof UseDpopNonce);
    assert.equal(err.dpopNonce, "n-1");
    assert.equal(err.retryAfterS, 1.5);
    assert.equal(new ApprovalPending().retryable, true);
  });
});

describe("sessions", () => {
  const jwt = (expIn) =>
    new UnsecuredJWT({ sub: "s" })
      .setExpirationTime(Math.floor(Date.now() / 1000) + expIn)
      .encode();

  it("from a string, an env var, a file, a command and a callback", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "session"), "tok-file\n");
    process.env.HS_TEST_SESSION = "tok-env";
    assert.equal(await asSessionProvider("tok-str").token(), "tok-str");
    assert.equal(await asSessionProvider({ env: "HS_TEST_SESSION" }).token(), "tok-env");
    assert.equal(await asSessionProvider({ file: join(dir, "session") }).token(), "tok-file");
    assert.equal(await asSessionProvider({ command: ["echo", "tok-cmd"] }).token(), "tok-cmd");
    assert.equal(await asSessionProvider(async () => "tok-cb").token(), "tok-cb");
    await assert.rejects(
      asSessionProvider({ env: "HS_TEST_UNSET_VAR" }).token(),
      /HS_TEST_UNSET_VAR/,
    );
    await assert.rejects(
      asSessionProvider({ command: ["false"] }).token(),
      /session command failed/,
    );
  });

  it("re-reads its source before the token expires, and not before", async () => {
    let loads = 0;
    const soon = asSessionProvider(() => {
      loads += 1;
      return jwt(10);
    }); // inside the 30 s margin
    await soon.token();
    await soon.token();
    assert.equal(loads, 2);
    loads = 0;
    const later = asSessionProvider(() => {
      loads += 1;
      return jwt(3600);
    });
    await Promise.all([later.token(), later.token()]);
    await later.token();
    assert.equal(loads, 1);
  });
});

describe("proof keys", () => {
  for (const alg of ["EdDSA", "ES256"]) {
    it(`loadOrCreate makes a ${alg} key readable by its owner only, and reads it back`, async () => {
      const path = join(tmp(), "conf", "agent.pem");
      const key = await ProofKey.loadOrCreate(path, alg);
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(statSync(join(path, "..")).mode & 0o777, 0o700);
      const again = await ProofKey.loadOrCreate(path, alg);
      assert.equal(again.thumbprint, key.thumbprint);
      assert.equal(again.alg, alg);
      assert.equal(key.thumbprint, await calculateJwkThumbprint(key.publicJwk));
      assert.equal(key.publicJwk.d, undefined);
    });
  }

  it("signs DPoP proofs as EdDSA (Ed25519) and ES256 (P-256, by the dpop library)", async () => {
    for (const alg of ["EdDSA", "ES256"]) {
      const key = await ProofKey.generate(alg);
      const proof = await key.dpop("POST", "https://gw.example/v1/execute", "session-token", "n1");
      const { protectedHeader, payload } = await compactVerify(
        proof,
        await importJWK(key.publicJwk, alg),
      );
      assert.equal(protectedHeader.alg, alg);
      assert.equal(protectedHeader.typ, "dpop+jwt");
      const claims = JSON.parse(new TextDecoder().decode(payload));
      assert.equal(claims.htm, "POST");
      assert.equal(claims.htu, "https://gw.example/v1/execute");
      assert.equal(claims.nonce, "n1");
      assert.equal(claims.ath, createHash("sha256").update("session-token").digest("base64url"));
      assert.ok(claims.jti.length >= 8 && Number.isInteger(claims.iat));
    }
  });
});

describe("settings from the environment", () => {
  it("HANDSHAKE_* first, else the stack.json of mcp-handshake up", async () => {
    const home = tmp();
    writeFileSync(
      join(home, "stack.json"),
      JSON.stringify({
        nats_url: "nats://127.0.0.1:1",
        nats_user: "agent",
        nats_password_file: "/p",
        gateway_url: "http://127.0.0.1:2",
      }),
    );
    const env = {
      HOME: home,
      HANDSHAKE_HOME: home,
      HANDSHAKE_AGENT_KEY: join(home, "k", "agent.pem"),
    };
    const viaStack = await optionsFromEnv(undefined, env);
    assert.equal(viaStack.gatewayUrl, "http://127.0.0.1:2");
    assert.equal(statSync(env.HANDSHAKE_AGENT_KEY).mode & 0o777, 0o600); // created on first use
    const nats = await optionsFromEnv("nats", env);
    assert.deepEqual(
      [nats.natsUrl, nats.natsUser, nats.natsPasswordFile, nats.gatewayUrl],
      ["nats://127.0.0.1:1", "agent", "/p", undefined],
    );
    const own = await optionsFromEnv(undefined, { ...env, HANDSHAKE_NATS_URL: "nats://h:3" });
    assert.deepEqual(
      [own.natsUrl, own.natsUser, own.gatewayUrl],
      ["nats://h:3", undefined, undefined],
    );
    const gw = await optionsFromEnv(undefined, { ...env, HANDSHAKE_GATEWAY_URL: "http://gw" });
    assert.equal(gw.gatewayUrl, "http://gw");
    assert.equal(defaultAgentKey({ HOME: "/h" }), "/h/.config/mcp-handshake/agent.pem");
    assert.equal(
      defaultAgentKey({ HOME: "/h", XDG_CONFIG_HOME: "/x" }),
      "/x/mcp-handshake/agent.pem",
    );
    assert.equal(defaultAgentKey({ HOME: "/h", HANDSHAKE_AGENT_KEY: "~/k.pem" }), "/h/k.pem");
  });
});

describe("a gateway behind a failing proxy", () => {
  it("fails closed: an execute answered by an HTML 502 is outcome_unknown, a read unavailable", async () => {
    const server = createServer((req, res) => {
      res.writeHead(502, { "Content-Type": "text/html" }).end("<html>bad gateway</html>");
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${server.address().port}`;
    try {
      const hs = await HandshakeClient.connect({ gatewayUrl: url, session: "s" });
      const grant = { transaction_id: "t", token: "k", tier: "public", params_hash: "sha256:x" };
      await assert.rejects(hs.execute(grant, "x.y", {}), OutcomeUnknown);
      await assert.rejects(hs.tools(), Unavailable);
    } finally {
      server.close();
    }
  });
});

describe("tool names", () => {
  it("map . to __ and back, refusing names that cannot round-trip", () => {
    assert.equal(hostName("payments.create_invoice"), "payments__create_invoice");
    assert.equal(toolName("payments__create_invoice"), "payments.create_invoice");
    assert.throws(() => hostName("a__b"), /cannot be mapped/);
    assert.throws(() => hostName("bad name"), /not a valid function name/);
  });
});

describe("reference vectors", () => {
  const keys = load("keys.json");
  it("thumbprints of every key (keys.json)", async () => {
    for (const [name, k] of Object.entries(keys.keys)) {
      assert.equal(await calculateJwkThumbprint(k.public_jwk), k.thumbprint, name);
    }
    for (const t of keys.thumbprints)
      assert.equal(await calculateJwkThumbprint(t.jwk), t.thumbprint);
  });

  it("PEM keys load with the same thumbprint (keys.json)", async () => {
    for (const name of ["agent-ed25519", "agent-p256", "agent-other"]) {
      const k = keys.keys[name];
      assert.equal((await ProofKey.fromPem(k.private_pem)).thumbprint, k.thumbprint, name);
    }
  });

  const params = load("params.json");
  it("canonical JSON and params hashes of normalized params (params.json)", () => {
    assert.ok(params.params.length > 0);
    for (const v of params.params) {
      assert.equal(canonicalJson(v.normalized), v.canonical, v.description);
      assert.equal(paramsHash(v.normalized), v.params_hash, v.description);
    }
    for (const v of params.jcs) {
      assert.equal(canonicalJson(v.value), v.canonical, v.description);
      assert.equal(sha256Tagged(v.value), v.sha256, v.description);
    }
  });

  const proofs = load("proofs.json");
  it("our proofs for the same inputs: EdDSA byte for byte, ES256 same header and claims (proofs.json)", async () => {
    let compared = 0;
    for (const v of proofs.proofs) {
      const bound = v.valid && v.header.jwk !== undefined && keys.keys[v.key] !== undefined;
      if (!bound) continue;
      const key = await ProofKey.fromPem(keys.keys[v.key].private_pem);
      const { txn, tool, ph } = v.expect;
      const ours = await key.sign(txn, tool, ph, { iat: v.claims.iat, jti: v.claims.jti });
      if (key.alg === "EdDSA") {
        assert.equal(ours, v.jws, v.case);
      } else {
        assert.equal(ours.split(".").slice(0, 2).join("."), v.signing_input, v.case);
        await compactVerify(v.jws, await importJWK(key.publicJwk, "ES256"));
      }
      compared += 1;
    }
    assert.ok(compared >= 2, "no vector was compared");
  });

  it("every valid proof verifies with its key (proofs.json)", async () => {
    for (const v of proofs.proofs.filter((p) => p.valid)) {
      const k = keys.keys[v.key];
      const { payload } = await compactVerify(v.jws, await importJWK(k.public_jwk, k.alg));
      assert.deepEqual(JSON.parse(new TextDecoder().decode(payload)), v.claims, v.case);
    }
  });

  const receipts = load("receipts.json");
  it("receipts verify with the JWKS, and rh is the hash of the result (receipts.json)", async () => {
    for (const v of receipts.receipts) {
      const expected = {
        transactionId: v.claims.txn,
        tool: v.claims.tool,
        paramsHash: v.claims.ph,
        result: v.result,
      };
      const claims = await verifyReceipt(v.jws, receipts.jwks, expected);
      assert.equal(claims.rh, sha256Tagged(v.result));
      assert.equal(claims.rh, v.rh);
      // another result, another transaction, a forged signature: each refused
      await assert.rejects(
        verifyReceipt(v.jws, receipts.jwks, { ...expected, result: { other: 1 } }),
        InvalidTransaction,
      );
      await assert.rejects(
        verifyReceipt(v.jws, receipts.jwks, { ...expected, transactionId: "x" }),
        InvalidTransaction,
      );
      const [h, p, s] = v.jws.split(".");
      const forged = `${h}.${p}.${s.startsWith("A") ? "B" : "A"}${s.slice(1)}`;
      await assert.rejects(verifyReceipt(forged, receipts.jwks, expected), ValidationFailed);
    }
  });

  const batch = load("batch.json");
  it("our batch proofs for the same inputs, byte for byte (batch.json)", async () => {
    let compared = 0;
    for (const v of batch.proofs) {
      const key = await ProofKey.fromPem(keys.keys[v.key].private_pem);
      const at = { iat: v.claims.iat, jti: v.claims.jti };
      const ours = await key.signBatch(v.claims.ops, at);
      if (v.header.typ !== BATCH_PROOF_TYP) {
        // a single proof's typ over the same claims: a batch proof is never that
        assert.notEqual(ours, v.jws, v.case);
        continue;
      }
      assert.equal(ours, v.jws, v.case); // EdDSA: deterministic
      assert.equal(ours.split(".").slice(0, 2).join("."), v.signing_input, v.case);
      // the pairs in another order, repeated: the same ops claim, the same proof
      const shuffled = [...v.claims.ops].reverse().concat(v.claims.ops);
      assert.equal(await key.signBatch(shuffled, at), v.jws, v.case);
      compared += 1;
    }
    assert.ok(compared >= 3, "no batch vector was compared");
    const all = batch.proofs.find((p) => p.case === "covers-all");
    assert.deepEqual(proofOps(batch.batch.pairs), all.claims.ops);
  });

  it("batch proofs by P-256 keys: the same header and exactly the claims ops, iat, jti", async () => {
    const key = await ProofKey.fromPem(keys.keys["agent-p256"].private_pem);
    const pairs = [...batch.batch.pairs].reverse();
    const jws = await key.signBatch(pairs);
    const { protectedHeader, payload } = await compactVerify(
      jws,
      await importJWK(key.publicJwk, "ES256"),
    );
    assert.deepEqual(protectedHeader, {
      alg: "ES256",
      jwk: key.publicJwk,
      kid: key.thumbprint,
      typ: BATCH_PROOF_TYP,
    });
    const claims = JSON.parse(new TextDecoder().decode(payload));
    assert.deepEqual(Object.keys(claims), ["ops", "iat", "jti"]);
    assert.deepEqual(claims.ops, proofOps(batch.batch.pairs));
    assert.ok(Number.isInteger(claims.iat) && Math.abs(claims.iat - Date.now() / 1000) < 5);
    assert.ok(claims.jti.length >= 8 && claims.jti.length <= 128);
  });

  it("the jti each covered operation claims, as any client computes it (batch.json)", () => {
    for (const v of batch.proofs) {
      for (const op of v.operations.filter((o) => o.op_jti !== null)) {
        const text = `handshake-batch-jti\0${v.claims.jti}\0${op.transaction_id}`;
        const digest = createHash("sha256").update(text, "utf8").digest("hex");
        assert.equal(op.op_jti, "b" + digest.slice(0, 32), v.case);
      }
    }
  });

  it("each receipt of a batch verifies alone, and not as another operation's (batch.json)", async () => {
    const { jwks, receipts: list } = batch.receipts;
    assert.ok(list.length >= 2);
    const expect = (v) => ({
      transactionId: v.transaction_id,
      tool: v.claims.tool,
      paramsHash: v.claims.ph,
      result: v.result,
    });
    for (const [n, v] of list.entries()) {
      const claims = await verifyReceipt(v.jws, jwks, expect(v));
      assert.equal(claims.rh, v.rh);
      const other = list[(n + 1) % list.length];
      await assert.rejects(verifyReceipt(other.jws, jwks, expect(v)), InvalidTransaction);
      const [h, p] = v.jws.split(".");
      const spliced = `${h}.${p}.${other.jws.split(".")[2]}`; // another op's signature
      await assert.rejects(verifyReceipt(spliced, jwks, expect(v)), ValidationFailed);
    }
  });

  const merkle = batch.merkle;
  it("RFC 6962's test tree: the root of each prefix (batch.json rfc6962)", () => {
    const leaves = merkle.rfc6962.leaves.map((x) => leafHash(Buffer.from(x, "hex")));
    merkle.rfc6962.roots.forEach((want, k) => {
      const { root, paths } = tree(leaves.slice(0, k + 1));
      assert.equal(root.toString("hex"), want);
      paths.forEach((path, i) => assert.deepEqual(rootFromPath(leaves[i], i, k + 1, path), root));
    });
  });

  it("an interior node never passes for a leaf; paths of the wrong shape are refused", () => {
    const leaves = merkle.rfc6962.leaves.slice(0, 4).map((x) => leafHash(Buffer.from(x, "hex")));
    const { root } = tree(leaves);
    const [left, right] = [nodeHash(leaves[0], leaves[1]), nodeHash(leaves[2], leaves[3])];
    assert.deepEqual(root, nodeHash(left, right));
    const forged = leafHash(Buffer.concat([leaves[0], leaves[1]])); // the left node's children
    assert.notDeepEqual(forged, left);
    assert.notDeepEqual(rootFromPath(forged, 0, 2, [right]), root);
    assert.equal(rootFromPath(leaves[0], 0, 4, [leaves[1]]), null); // too short for 4 leaves
    assert.equal(rootFromPath(leaves[0], 4, 4, []), null);
    assert.equal(rootFromPath(leaves[0], -1, 4, []), null);
  });

  it("a Merkle batch receipt's leaves, root, paths and signed root, byte for byte (batch.json)", async () => {
    const ran = merkle.reply.results.filter((r) => "inclusion" in r);
    assert.equal(ran.length, merkle.root_claims.size);
    const hashes = ran.map((r, i) => {
      const canonical = canonicalJson(r.inclusion.leaf);
      assert.equal(canonical, merkle.leaves[i].canonical);
      const digest = createHash("sha256")
        .update(Buffer.concat([Buffer.from([0]), Buffer.from(canonical)]))
        .digest();
      assert.equal(digest.toString("hex"), merkle.leaves[i].leaf_hash);
      assert.deepEqual(leafHash(canonical), digest);
      return digest;
    });
    const { root, paths } = tree(hashes);
    assert.equal(root.toString("hex"), merkle.root_claims.root);
    assert.deepEqual(
      paths.map((p) => p.map((n) => n.toString("hex"))),
      ran.map((r) => r.inclusion.path),
    );
    // the root's JWS: jose signs the same header and claims, byte for byte (EdDSA)
    const jws = merkle.reply.batch_receipt;
    const key = await importJWK(keys.keys.receipt.private_jwk, "EdDSA");
    const ours = await new SignJWT(merkle.root_claims)
      .setProtectedHeader(merkle.root_header)
      .sign(key);
    assert.equal(ours, jws);
    assert.deepEqual(await verifyRoot(jws, merkle.jwks), merkle.root_claims);
    // each operation's receipt on its own verifies; the tampered ones do not
    for (const [i, r] of ran.entries()) {
      const expected = {
        transactionId: r.transaction_id,
        tool: r.inclusion.leaf.tool,
        paramsHash: r.params_hash,
        result: r.result,
      };
      assert.ok(isBatchReceipt(merkle.receipts[i]));
      assert.deepEqual(
        await verifyBatchReceipt(merkle.receipts[i], merkle.jwks, expected),
        r.inclusion.leaf,
      );
      const swapped = { ...expected, result: ran[(i + 1) % ran.length].result };
      await assert.rejects(
        verifyBatchReceipt(merkle.receipts[i], merkle.jwks, swapped),
        InvalidTransaction,
      );
    }
    const first = ran[0];
    const expected = {
      transactionId: first.transaction_id,
      tool: first.inclusion.leaf.tool,
      paramsHash: first.params_hash,
      result: first.result,
    };
    for (const v of merkle.refused) {
      await assert.rejects(
        verifyBatchReceipt(v.receipt, merkle.jwks, expected),
        ValidationFailed,
        v.case,
      );
    }
    // a batch root is never a single receipt
    await assert.rejects(verifyReceipt(jws, merkle.jwks, expected), ValidationFailed);
  });

  const sessions = load("sessions.json");
  it("a bound session's cnf.jkt is its key's thumbprint (sessions.json)", () => {
    let bound = 0;
    for (const [name, s] of Object.entries(sessions.sessions)) {
      const claims = decodeJwt(s.jwt ?? s.token);
      if (claims.cnf?.jkt === undefined) continue;
      assert.equal(claims.cnf.jkt, keys.keys[s.bound_key].thumbprint, name);
      bound += 1;
    }
    assert.ok(bound >= 1);
  });
});

describe("batches (callMany and stream, batch.ts)", () => {
  const grant = (k, status = "granted") => ({
    transaction_id: `t${k}`,
    token: `k${k}`,
    status,
    tier: "public",
    params_hash: `sha256:${k}`,
    expires_at: 0,
  });
  /** A fake mediator: records each request; `fail` names params that fail alone. */
  function fakeCalls({ batches = true, executeBatches = batches, pending = [], fail = [] } = {}) {
    const log = [];
    const calls = {
      log,
      async authorizeBatch(ops) {
        log.push(["authorize.batch", ops.length]);
        if (!batches) throw new Unavailable("the mediator serves no batches");
        return ops.map(({ params }) =>
          fail.includes(params.n)
            ? new InvalidTransaction("refused", { transactionId: `t${params.n}` })
            : grant(params.n, pending.includes(params.n) ? "pending_approval" : "granted"),
        );
      },
      async executeBatch(ops) {
        log.push(["execute.batch", ops.length]);
        if (!executeBatches) throw new Unavailable("the mediator serves no batches");
        return ops.map(({ grant: g }) => ({ ran: g.transaction_id, via: "batch" }));
      },
      async call(tool, params) {
        log.push(["call", params.n]);
        if (fail.includes(params.n)) throw new InvalidTransaction("refused");
        return { ran: `t${params.n}`, via: "call" };
      },
      async execute({ grant: g }) {
        log.push(["execute", g.transaction_id]);
        return { ran: g.transaction_id, via: "execute" };
      },
      async wait({ grant: g }) {
        log.push(["wait", g.transaction_id]);
        return { ran: g.transaction_id, via: "wait" };
      },
    };
    return calls;
  }
  const many = (batcher, n, from = 0) =>
    Promise.allSettled(Array.from({ length: n }, (_, k) => batcher.call("x.y", { n: from + k })));

  it("groups the calls started together, at most a window, one authorize and one execute each", async () => {
    const calls = fakeCalls();
    const outcomes = await many(new Batcher(calls, 4), 10);
    assert.deepEqual(
      outcomes.map((o) => o.value.ran),
      Array.from({ length: 10 }, (_, k) => `t${k}`),
    );
    assert.deepEqual(
      calls.log.filter(([what]) => what === "authorize.batch").map(([, n]) => n),
      [4, 4, 2],
    );
    assert.deepEqual(
      calls.log.filter(([what]) => what === "execute.batch").map(([, n]) => n),
      [4, 4, 2],
    );
  });

  it("splits under the mediator's limits: operations per request, and bytes", async () => {
    const calls = fakeCalls();
    const batcher = new Batcher(calls, 10_000);
    await many(batcher, MAX_OPS + 3);
    const sizes = calls.log.filter(([what]) => what === "authorize.batch").map(([, n]) => n);
    assert.equal(
      sizes.reduce((a, b) => a + b),
      MAX_OPS + 3,
    );
    assert.ok(sizes.length >= 2 && sizes.every((n) => n <= MAX_OPS), String(sizes));
    const big = fakeCalls();
    const wide = new Batcher(big, 16);
    const pad = "x".repeat(20_000);
    await Promise.all([0, 1, 2, 3].map((n) => wide.call("x.y", { n, pad })));
    const bigSizes = big.log.filter(([what]) => what === "authorize.batch").map(([, n]) => n);
    assert.deepEqual(bigSizes, [2, 2]);
  });

  it("one operation's error fails no other; a pending one waits and runs alone", async () => {
    const calls = fakeCalls({ pending: [1], fail: [2] });
    const [a, b, c] = await many(new Batcher(calls, 8), 3);
    assert.equal(a.value.via, "batch");
    assert.equal(b.value.via, "wait");
    assert.ok(c.reason instanceof InvalidTransaction);
    assert.deepEqual(
      calls.log.find(([what]) => what === "execute.batch"),
      ["execute.batch", 1],
    );
  });

  it("a whole-request error reaches every call of that batch, and only those", async () => {
    const calls = fakeCalls();
    let first = true;
    calls.authorizeBatch = async (ops) => {
      if (first) {
        first = false;
        throw new RateLimited("busy");
      }
      return ops.map(({ params }) => grant(params.n));
    };
    const batcher = new Batcher(calls, 2);
    const outcomes = await many(batcher, 4);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["rejected", "rejected", "fulfilled", "fulfilled"],
    );
    assert.ok(outcomes[0].reason instanceof RateLimited);
  });

  it("no batch responders: every call alone, and the batcher stops asking", async () => {
    const calls = fakeCalls({ batches: false, fail: [1] });
    const batcher = new Batcher(calls, 8);
    const first = await many(batcher, 3);
    assert.deepEqual(
      first.map((o) => o.status),
      ["fulfilled", "rejected", "fulfilled"],
    );
    await many(batcher, 2, 3);
    assert.equal(calls.log.filter(([what]) => what === "authorize.batch").length, 1);
    assert.deepEqual(
      calls.log.filter(([what]) => what === "call").map(([, n]) => n),
      [0, 1, 2, 3, 4],
    );
  });

  it("no responders for execute.batch (nothing received, no token used): each executed alone", async () => {
    const calls = fakeCalls({ executeBatches: false });
    const outcomes = await many(new Batcher(calls, 8), 2);
    assert.deepEqual(
      outcomes.map((o) => o.value.via),
      ["execute", "execute"],
    );
  });

  it("stream and callMany over a gateway without batch routes (404): calls one by one, outcomes in order", async () => {
    const receipt = new UnsecuredJWT({ txn: "t" }).encode();
    let inFlight = 0;
    let most = 0;
    const paths = [];
    const server = createServer((req, res) => {
      paths.push(req.url);
      inFlight += 1;
      most = Math.max(most, inFlight);
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        setTimeout(() => {
          inFlight -= 1;
          const send = (status, value) =>
            res
              .writeHead(status, { "Content-Type": "application/json" })
              .end(JSON.stringify(value));
          if (req.url.endsWith("/batch")) {
            // a gateway without the batch routes
            return send(404, { error: { code: "not_found", message: "no such endpoint" } });
          }
          const { params } = JSON.parse(body || "{}");
          if (req.url === "/v1/authorize" && params.n === 2) {
            return send(422, { error: { code: "invalid_params", message: "no" } });
          }
          if (req.url === "/v1/authorize") return send(200, grant(params.n));
          return send(200, { transaction_id: "t", result: { n: params.n }, receipt });
        }, 5);
      });
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${server.address().port}`;
    try {
      const hs = await HandshakeClient.connect({
        gatewayUrl: url,
        session: "s",
        verifyReceipts: false,
      });
      const calls = Array.from({ length: 7 }, (_, n) => ["x.y", { n }]);
      const outcomes = await hs.callMany(calls, { concurrency: 3 });
      assert.equal(outcomes.length, 7);
      outcomes.forEach((o, n) => {
        if (n === 2) assert.equal(o.code, "invalid_params");
        else assert.deepEqual(o.result, { n });
      });
      assert.ok(most <= 3, `at most 3 in flight, saw ${most}`);
      // asked once for a batch (404: forwarded nothing), then one by one
      assert.deepEqual(
        paths.filter((p) => p.includes("batch")),
        ["/v1/authorize/batch"],
      );
      const seen = [];
      async function* source() {
        for (const c of calls) yield c;
      }
      for await (const [i, o] of hs.stream(source(), { concurrency: 2 })) {
        seen.push(i);
        if (seen.length === 3) break; // leaving early starts no more calls
      }
      assert.equal(seen.length, 3);
      await assert.rejects(hs.callMany(calls, { concurrency: 0 }), RangeError);
    } finally {
      server.close();
    }
  });
});
