// No stack needed: errors, session sources, key files, names, and the reference vectors
// in docs/vectors/ (checked as tests/test_vectors.py checks the service).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { calculateJwkThumbprint, compactVerify, decodeJwt, importJWK, UnsecuredJWT } from "jose";
import {
  ApprovalPending,
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
  sha256Tagged,
  UseDpopNonce,
  ValidationFailed,
  verifyReceipt,
} from "../dist/index.js";
import { hostName, toolName } from "../dist/ai.js";

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
