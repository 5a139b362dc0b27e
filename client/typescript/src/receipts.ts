/** Receipt verification (docs/protocol.md, "Receipt"): jose verifies the JWS against the
 * mediator's JWKS; the claims must name this transaction, tool, params and result. An
 * operation's Merkle batch receipt (`{root, index, path, leaf}`, protocol.md "Merkle batch
 * receipts") is verified the same way once its root's signature and its path are. */

import {
  createLocalJWKSet,
  decodeProtectedHeader,
  jwtVerify,
  errors as joseErrors,
  type JSONWebKeySet,
} from "jose";
import { InvalidTransaction, ValidationFailed } from "./errors.js";
import { sha256Tagged } from "./hashing.js";
import {
  isBatchReceipt,
  parseBatchReceipt,
  verifyInclusion,
  verifyRoot,
  type RootClaims,
} from "./merkle.js";
import type { ReceiptClaims } from "./types.js";

export const RECEIPT_TYP = "handshake-receipt+jwt";
const REQUIRED = ["iss", "sub", "txn", "tool", "ph", "rh", "iat"];

/** What a receipt must cover. */
export interface Expected {
  transactionId: string;
  tool: string;
  paramsHash: string;
  result: unknown;
}

/**
 * The receipt's claims once its signature verifies with a key of `jwks` (by `kid`), its
 * header is a handshake receipt's, and it covers `expected` (`rh` is the hash of the
 * result). `ValidationFailed` for a bad signature, `InvalidTransaction` for a mismatch.
 */
export async function verifyReceipt(
  receipt: string,
  jwks: JSONWebKeySet,
  expected: Expected,
): Promise<ReceiptClaims> {
  let payload: Record<string, unknown>;
  try {
    const verified = await jwtVerify(receipt, createLocalJWKSet(jwks), {
      algorithms: ["EdDSA", "Ed25519"],
      typ: RECEIPT_TYP,
      requiredClaims: REQUIRED,
      clockTolerance: 60,
    });
    if (typeof verified.protectedHeader.kid !== "string") {
      throw new ValidationFailed("receipt header has no kid");
    }
    payload = verified.payload as Record<string, unknown>;
  } catch (err) {
    if (err instanceof ValidationFailed) throw err;
    if (err instanceof joseErrors.JOSEError) {
      throw new ValidationFailed("receipt signature does not verify");
    }
    throw err;
  }
  return checkClaims(payload, expected);
}

/** Batch roots already verified, by their exact JWS (one per batch, not per operation). */
export type RootCache = Map<string, RootClaims>;
const ROOTS = 256;

/**
 * An operation's Merkle batch receipt: its root's signature (verified once per root when
 * `roots` is given), its path to that root, then its leaf's claims as a receipt's. The
 * same errors as `verifyReceipt`.
 */
export async function verifyBatchReceipt(
  receipt: string,
  jwks: JSONWebKeySet,
  expected: Expected,
  roots: RootCache = new Map(),
): Promise<ReceiptClaims> {
  const parsed = parseBatchReceipt(receipt);
  let root = roots.get(parsed.root);
  if (root === undefined) {
    root = await verifyRoot(parsed.root, jwks);
    roots.set(parsed.root, root);
    if (roots.size > ROOTS) roots.delete(roots.keys().next().value as string);
  }
  verifyInclusion(root, parsed);
  for (const name of REQUIRED) {
    if (!(name in parsed.leaf)) throw new ValidationFailed(`batch receipt leaf lacks ${name}`);
  }
  return checkClaims(parsed.leaf, expected);
}

/** The claims, if they cover `expected` (`InvalidTransaction` otherwise). */
function checkClaims(payload: Record<string, unknown>, expected: Expected): ReceiptClaims {
  const want: Record<string, string> = {
    txn: expected.transactionId,
    tool: expected.tool,
    ph: expected.paramsHash,
    rh: sha256Tagged(expected.result),
  };
  for (const [name, value] of Object.entries(want)) {
    if (payload[name] !== value) {
      throw new InvalidTransaction(`receipt does not match this transaction (${name})`);
    }
  }
  if (typeof payload.iat !== "number" || payload.iat > Date.now() / 1000 + 60) {
    throw new ValidationFailed("receipt issued in the future");
  }
  return payload as ReceiptClaims;
}

/** Whether the receipt (or a batch receipt's root) names a `kid` the JWKS lacks (then
 * refresh the JWKS once). */
export function unknownKid(receipt: string, jwks: JSONWebKeySet): boolean {
  try {
    const jws = isBatchReceipt(receipt) ? parseBatchReceipt(receipt).root : receipt;
    const { kid } = decodeProtectedHeader(jws);
    return !jwks.keys.some((k) => k.kid === kid);
  } catch {
    return false;
  }
}
