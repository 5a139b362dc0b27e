/** Receipt verification (docs/protocol.md, "Receipt"): jose verifies the JWS against the
 * mediator's JWKS; the claims must name this transaction, tool, params and result. */

import {
  createLocalJWKSet,
  decodeProtectedHeader,
  jwtVerify,
  errors as joseErrors,
  type JSONWebKeySet,
} from "jose";
import { InvalidTransaction, ValidationFailed } from "./errors.js";
import { sha256Tagged } from "./hashing.js";
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

/** Whether the receipt names a `kid` the JWKS lacks (then refresh the JWKS once). */
export function unknownKid(receipt: string, jwks: JSONWebKeySet): boolean {
  try {
    const { kid } = decodeProtectedHeader(receipt);
    return !jwks.keys.some((k) => k.kid === kid);
  } catch {
    return false;
  }
}
