/**
 * The agent's proof key (Ed25519 or P-256): signs the handshake proof on NATS,
 * DPoP proofs over the gateway, and approvers' decisions. jose does every JWS,
 * panva's `dpop` the P-256 DPoP proofs; the key file is the PKCS#8 PEM the
 * Python client reads and writes, so one key serves both.
 */

import { createHash, createPrivateKey, randomUUID } from "node:crypto";
import { mkdir, open, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { generateProof } from "dpop";
import {
  base64url,
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importJWK,
  importPKCS8,
  SignJWT,
  type CryptoKey,
  type JWK,
} from "jose";

/** The JWS algorithms of proof keys: EdDSA (Ed25519) or ES256 (P-256). */
export type KeyAlg = "EdDSA" | "ES256";

export const PROOF_TYP = "handshake-proof+jwt";
/** A batch proof: one JWS proving every operation of an `execute.batch` it names. */
export const BATCH_PROOF_TYP = "handshake-batch-proof+jwt";
export const DECISION_TYP = "handshake-decision+jwt";
export const DPOP_TYP = "dpop+jwt";

/** Proof claims for reconcile (protocol.md, "Reconcile"). */
export const RECONCILE_PROOF_TOOL = "handshake.reconcile";
export const RECONCILE_PROOF_PH = "reconcile";

/** A proof's `iat` and `jti`, fixed (reference vectors); fresh ones by default. */
export interface SignAt {
  iat?: number;
  jti?: string;
}

function jti(): string {
  return randomUUID().replaceAll("-", "");
}

/** base64url SHA-256 of the session token, the DPoP proof's `ath`. */
export function accessTokenHash(token: string): string {
  return base64url.encode(createHash("sha256").update(token, "utf8").digest());
}

/** The `ops` claim of a batch proof: the `[transaction id, params hash]` pairs, sorted
 * (by UTF-16 code units, transaction id first) and without duplicates. */
export function proofOps(pairs: ReadonlyArray<readonly [string, string]>): [string, string][] {
  const unique = new Map<string, [string, string]>();
  for (const [txn, ph] of pairs) unique.set(JSON.stringify([txn, ph]), [txn, ph]);
  const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  return [...unique.values()].sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]));
}

function algOfPem(pem: string): KeyAlg {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType === "ed25519") return "EdDSA";
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    return "ES256";
  }
  throw new TypeError("the proof key must be Ed25519 or P-256");
}

export class ProofKey {
  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    readonly alg: KeyAlg,
    /** The public JWK sent in proof headers (key members only). */
    readonly publicJwk: JWK,
    /** RFC 7638 SHA-256 thumbprint: a session's `cnf.jkt` binds it. */
    readonly thumbprint: string,
  ) {}

  private static async of(privateKey: CryptoKey, alg: KeyAlg): Promise<ProofKey> {
    const { kty, crv, x, y } = await exportJWK(privateKey);
    // Members in sorted order, as PyJWT writes them: EdDSA proofs come out byte for byte
    // as the Python client's (docs/vectors/proofs.json).
    const publicJwk: JWK = y === undefined ? { crv, kty, x } : { crv, kty, x, y };
    const publicKey = (await importJWK({ ...publicJwk, ext: true }, alg)) as CryptoKey;
    return new ProofKey(
      privateKey,
      publicKey,
      alg,
      publicJwk,
      await calculateJwkThumbprint(publicJwk),
    );
  }

  /** A new key, in memory. */
  static async generate(alg: KeyAlg = "EdDSA"): Promise<ProofKey> {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    return ProofKey.of(privateKey, alg);
  }

  /** A key from a PKCS#8 PEM (Ed25519 or P-256). */
  static async fromPem(pem: string): Promise<ProofKey> {
    const alg = algOfPem(pem);
    return ProofKey.of(await importPKCS8(pem, alg, { extractable: true }), alg);
  }

  static async load(path: string): Promise<ProofKey> {
    return ProofKey.fromPem(await readFile(path, "utf8"));
  }

  /**
   * The key stored at `path`, created there first if there is none: a PKCS#8 PEM
   * readable by its owner only (0600), in a directory made 0700 when created.
   */
  static async loadOrCreate(path: string, alg: KeyAlg = "EdDSA"): Promise<ProofKey> {
    try {
      return await ProofKey.load(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const key = await ProofKey.generate(alg);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    let file;
    try {
      file = await open(path, "wx", 0o600); // never overwrites, never wider than 0600
    } catch (err) {
      // Another process created it meanwhile: use that one.
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return ProofKey.load(path);
      throw err;
    }
    try {
      await file.writeFile(await key.toPem());
    } finally {
      await file.close();
    }
    return key;
  }

  /** The private key as a PKCS#8 PEM. Keep it secret. */
  async toPem(): Promise<string> {
    return exportPKCS8(this.privateKey);
  }

  private async signJws(
    typ: string,
    claims: Record<string, unknown>,
    at: SignAt = {},
  ): Promise<string> {
    return new SignJWT({ ...claims })
      .setProtectedHeader({ alg: this.alg, jwk: this.publicJwk, kid: this.thumbprint, typ })
      .setIssuedAt(at.iat ?? Math.floor(Date.now() / 1000))
      .setJti(at.jti ?? jti())
      .sign(this.privateKey);
  }

  /** The handshake proof for executing `txn` (`Handshake-Proof`, protocol.md). `at`
   * fixes `iat` and `jti` (reference vectors); leave it out otherwise. */
  async sign(txn: string, tool: string, paramsHash: string, at?: SignAt): Promise<string> {
    return this.signJws(PROOF_TYP, { txn, tool, ph: paramsHash }, at);
  }

  /**
   * A batch proof (`Handshake-Proof` on `execute.batch`, protocol.md "Batch proof")
   * covering each `[transactionId, paramsHash]` pair: claims exactly `ops` (the pairs,
   * sorted, without duplicates), `iat` and `jti`. `at` as for `sign`.
   */
  async signBatch(pairs: ReadonlyArray<readonly [string, string]>, at?: SignAt): Promise<string> {
    return this.signJws(BATCH_PROOF_TYP, { ops: proofOps(pairs) }, at);
  }

  /** An approver's signed decision (`Handshake-Proof` on `approvals.decide`). */
  async signDecision(txn: string, previewHash: string, decision: string): Promise<string> {
    return this.signJws(DECISION_TYP, { txn, preview_hash: previewHash, decision });
  }

  /**
   * A DPoP proof (RFC 9449) for one HTTP request carrying `accessToken`.
   *
   * P-256 proofs come from panva's `dpop`. That library labels Ed25519 proofs
   * `alg: "Ed25519"` (RFC 9864), which a gateway that knows only the older
   * name `EdDSA` refuses (and the refusal uses the token up); so Ed25519 proofs
   * are signed by jose as `EdDSA`, which every gateway accepts.
   */
  async dpop(htm: string, htu: string, accessToken: string, nonce?: string): Promise<string> {
    if (this.alg === "ES256") {
      const pair = { privateKey: this.privateKey, publicKey: this.publicKey };
      return generateProof(pair, htu, htm, nonce, accessToken);
    }
    const claims: Record<string, string> = { htm, htu, ath: accessTokenHash(accessToken) };
    if (nonce !== undefined) claims.nonce = nonce;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "EdDSA", typ: DPOP_TYP, jwk: this.publicJwk })
      .setIssuedAt()
      .setJti(jti())
      .sign(this.privateKey);
  }
}
