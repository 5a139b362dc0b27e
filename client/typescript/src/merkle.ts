/**
 * Merkle batch receipts (docs/protocol.md, "Merkle batch receipts"), as the Python
 * client's (shared/mcp_handshake/shared/merkle.py and batchreceipt.py).
 *
 * The tree is RFC 9162 section 2.1 over SHA-256 (node:crypto): leaf hash
 * SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right), split at the largest
 * power of two below the size; an inclusion path is verified as 2.1.3.2 says. A leaf is
 * the RFC 8785 form (the `canonicalize` package) of the claims its operation's single
 * receipt would have. One operation's receipt on its own is the JSON object
 * `{root, index, path, leaf}`, `root` the batch's JWS (`typ:
 * handshake-batch-receipt+jwt`), verified by jose against the mediator's JWKS.
 */

import { createHash } from "node:crypto";
import { createLocalJWKSet, jwtVerify, errors as joseErrors, type JSONWebKeySet } from "jose";
import { ValidationFailed } from "./errors.js";
import { canonicalJson } from "./hashing.js";

export const BATCH_RECEIPT_TYP = "handshake-batch-receipt+jwt";
/** The root's `tree` claim: RFC 9162 2.1 over SHA-256, leaves the JCS of the claims. */
export const TREE = "rfc9162-sha256";
/** Longest inclusion path a verifier accepts. */
export const MAX_PATH = 64;
const MAX_RECEIPT_BYTES = 64 * 1024;
const ROOT_CLAIMS = ["iss", "sub", "iat", "tree", "size", "root"];
const HEX = /^[0-9a-f]{64}$/;

/** One operation's receipt on its own. */
export interface BatchReceipt {
  root: string;
  index: number;
  path: string[];
  leaf: Record<string, unknown>;
}

/** The claims of a verified batch root. */
export interface RootClaims {
  iss: string;
  sub: string;
  iat: number;
  tree: string;
  size: number;
  root: string;
  [claim: string]: unknown;
}

export function leafHash(leaf: Buffer | string): Buffer {
  return createHash("sha256")
    .update(Buffer.from([0]))
    .update(leaf)
    .digest();
}

export function nodeHash(left: Buffer, right: Buffer): Buffer {
  return createHash("sha256")
    .update(Buffer.from([1]))
    .update(left)
    .update(right)
    .digest();
}

/** The root of the leaf hashes `leaves` and each leaf's inclusion path (RFC 9162 2.1). */
export function tree(leaves: readonly Buffer[]): { root: Buffer; paths: Buffer[][] } {
  if (leaves.length === 0) throw new RangeError("a Merkle tree needs at least one leaf");
  if (leaves.length === 1) return { root: leaves[0] as Buffer, paths: [[]] };
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  const left = tree(leaves.slice(0, k));
  const right = tree(leaves.slice(k));
  const paths = [
    ...left.paths.map((p) => [...p, right.root]),
    ...right.paths.map((p) => [...p, left.root]),
  ];
  return { root: nodeHash(left.root, right.root), paths };
}

/** The root `path` proves the leaf hash at `index` of a tree of `size` leaves under
 * (RFC 9162 2.1.3.2), or null if it cannot be one. */
export function rootFromPath(
  leaf: Buffer,
  index: number,
  size: number,
  path: readonly Buffer[],
): Buffer | null {
  if (!Number.isSafeInteger(index) || index < 0 || index >= size || path.length > MAX_PATH) {
    return null;
  }
  // Numbers, not bits: a tree size above 2^31 would overflow JavaScript's bit operators.
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== 32 || sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/** A batch receipt is a JSON object; a single receipt, a compact JWS. */
export function isBatchReceipt(receipt: string): boolean {
  return receipt.trimStart().startsWith("{");
}

const invalidPath = (): ValidationFailed =>
  new ValidationFailed("batch receipt inclusion path does not verify");

/** Its members, checked for their types (`ValidationFailed` otherwise). */
export function parseBatchReceipt(receipt: string): BatchReceipt {
  if (receipt.length > MAX_RECEIPT_BYTES) throw new ValidationFailed("batch receipt too large");
  let x: Partial<BatchReceipt>;
  try {
    x = JSON.parse(receipt) as Partial<BatchReceipt>;
  } catch {
    throw invalidPath();
  }
  const ok =
    typeof x === "object" &&
    x !== null &&
    typeof x.root === "string" &&
    Number.isSafeInteger(x.index) &&
    Array.isArray(x.path) &&
    x.path.length <= MAX_PATH &&
    x.path.every((p) => typeof p === "string" && HEX.test(p)) &&
    typeof x.leaf === "object" &&
    x.leaf !== null &&
    !Array.isArray(x.leaf) &&
    Object.keys(x).length === 4;
  if (!ok) throw invalidPath();
  return x as BatchReceipt;
}

/** The root's claims once its signature verifies with a key of `jwks` and its header and
 * claims are a batch root's. */
export async function verifyRoot(root: string, jwks: JSONWebKeySet): Promise<RootClaims> {
  let payload: Record<string, unknown>;
  try {
    const verified = await jwtVerify(root, createLocalJWKSet(jwks), {
      algorithms: ["EdDSA", "Ed25519"],
      typ: BATCH_RECEIPT_TYP,
      requiredClaims: ROOT_CLAIMS,
      clockTolerance: 60,
    });
    if (typeof verified.protectedHeader.kid !== "string") throw new joseErrors.JOSEError();
    payload = verified.payload as Record<string, unknown>;
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) {
      throw new ValidationFailed("batch receipt signature does not verify");
    }
    throw err;
  }
  const { size, tree: kind, root: digest } = payload;
  if (kind !== TREE || !Number.isSafeInteger(size) || (size as number) < 1) {
    throw new ValidationFailed("batch receipt root is not a handshake batch receipt's");
  }
  if (typeof digest !== "string" || !HEX.test(digest)) {
    throw new ValidationFailed("batch receipt root is not a handshake batch receipt's");
  }
  return payload as RootClaims;
}

/** That the receipt's path leads from its leaf's hash to the verified root, and the leaf
 * was issued with it (same `iss` and `sub`). */
export function verifyInclusion(root: RootClaims, receipt: BatchReceipt): void {
  let canonical: string;
  try {
    canonical = canonicalJson(receipt.leaf);
  } catch {
    throw new ValidationFailed("batch receipt leaf is not canonical JSON");
  }
  const path = receipt.path.map((p) => Buffer.from(p, "hex"));
  const got = rootFromPath(leafHash(canonical), receipt.index, root.size, path);
  if (got === null || got.toString("hex") !== root.root) throw invalidPath();
  if (receipt.leaf.iss !== root.iss || receipt.leaf.sub !== root.sub) {
    throw new ValidationFailed("batch receipt leaf was not issued with this root");
  }
}
