/** Params and result hashes (docs/protocol.md, "Params hash"): RFC 8785 (JCS) by the
 * `canonicalize` package, SHA-256 by node:crypto. */

import { createHash } from "node:crypto";
import canonicalize from "canonicalize";

/** The RFC 8785 canonical JSON of `value`; a value JCS cannot represent is refused. */
export function canonicalJson(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) {
    throw new TypeError("value has no canonical JSON form");
  }
  return text;
}

/** `"sha256:" + lowercase hex SHA-256` of the canonical JSON of `value`. */
export function sha256Tagged(value: unknown): string {
  return "sha256:" + createHash("sha256").update(canonicalJson(value), "utf8").digest("hex");
}

/** The params hash of normalized params, as in a grant's `params_hash`. */
export const paramsHash = sha256Tagged;
