/**
 * The protocol's errors (docs/protocol.md, "Errors"), one class per wire code.
 *
 * ```
 * HandshakeError            code, status, retryable, transactionId, retryAfterS
 * ├── BadRequest            bad_request          400
 * ├── Unauthenticated       unauthenticated      401
 * ├── UseDpopNonce          use_dpop_nonce       401  retryable (gateway)
 * ├── Forbidden             forbidden            403
 * ├── ApprovalDenied        approval_denied      403
 * ├── UnknownTool           unknown_tool         404
 * ├── NotFound              not_found            404  (gateway)
 * ├── MethodNotAllowed      method_not_allowed   405  (gateway)
 * ├── RequestTimeout        request_timeout      408  (gateway)
 * ├── InvalidTransaction    invalid_transaction  409
 * ├── ApprovalPending       approval_pending     409  retryable
 * ├── PayloadTooLarge       payload_too_large    413
 * ├── InvalidParams         invalid_params       422
 * ├── ValidationFailed      validation_failed    422
 * ├── RateLimited           rate_limited         429  retryable
 * ├── InternalError         internal             500
 * ├── TargetError           target_error         502
 * ├── Unavailable           unavailable          503  retryable
 * └── OutcomeUnknown        outcome_unknown      504
 * ```
 */

export interface ErrorDetail {
  code: string;
  message?: string;
  transaction_id?: string | null;
  retryable?: boolean;
  retry_after_s?: number | null;
}

export interface ErrorInit {
  transactionId?: string | null;
  retryAfterS?: number | null;
  /** The server's `retryable` flag, when it sent one. */
  retryable?: boolean;
  /** The nonce a `use_dpop_nonce` answer asks to retry with. */
  dpopNonce?: string;
}

export class HandshakeError extends Error {
  static readonly code: string = "internal";
  static readonly status: number = 500;
  static readonly retryable: boolean = false;
  static readonly defaultMessage: string = "handshake error";

  readonly code: string;
  readonly status: number;
  readonly retryable: boolean;
  readonly transactionId: string | null;
  readonly retryAfterS: number | null;

  constructor(message?: string, init: ErrorInit = {}) {
    const cls = new.target as typeof HandshakeError;
    super(message ?? cls.defaultMessage);
    this.name = cls.name;
    this.code = cls.code;
    this.status = cls.status;
    this.retryable = init.retryable ?? cls.retryable;
    this.transactionId = init.transactionId ?? null;
    this.retryAfterS = init.retryAfterS ?? null;
  }
}

function kind(code: string, status: number, defaultMessage: string, retryable = false) {
  return class extends HandshakeError {
    static override readonly code = code;
    static override readonly status = status;
    static override readonly retryable = retryable;
    static override readonly defaultMessage = defaultMessage;
  };
}

export class BadRequest extends kind("bad_request", 400, "bad request") {}
export class Unauthenticated extends kind("unauthenticated", 401, "not authenticated") {}
export class UseDpopNonce extends kind("use_dpop_nonce", 401, "use the DPoP nonce", true) {
  /** The nonce to sign the retried proof with (`DPoP-Nonce`). */
  readonly dpopNonce: string | null;
  constructor(message?: string, init: ErrorInit = {}) {
    super(message, init);
    this.dpopNonce = init.dpopNonce ?? null;
  }
}
export class Forbidden extends kind("forbidden", 403, "forbidden") {}
export class ApprovalDenied extends kind("approval_denied", 403, "approval denied") {}
export class UnknownTool extends kind("unknown_tool", 404, "unknown tool") {}
export class NotFound extends kind("not_found", 404, "no such endpoint") {}
export class MethodNotAllowed extends kind("method_not_allowed", 405, "method not allowed") {}
export class RequestTimeout extends kind("request_timeout", 408, "request timed out") {}
export class InvalidTransaction extends kind("invalid_transaction", 409, "invalid transaction") {}
export class ApprovalPending extends kind("approval_pending", 409, "approval pending", true) {}
export class PayloadTooLarge extends kind("payload_too_large", 413, "payload too large") {}
export class InvalidParams extends kind("invalid_params", 422, "invalid params") {}
export class ValidationFailed extends kind("validation_failed", 422, "validation failed") {}
export class RateLimited extends kind("rate_limited", 429, "rate limited", true) {}
export class InternalError extends kind("internal", 500, "internal error") {}
export class TargetError extends kind("target_error", 502, "target error") {}
export class Unavailable extends kind("unavailable", 503, "service unavailable", true) {}
export class OutcomeUnknown extends kind("outcome_unknown", 504, "outcome unknown") {}

/** Every error class, by its wire code. */
export const ERRORS: Readonly<Record<string, typeof HandshakeError>> = Object.fromEntries(
  [
    BadRequest,
    Unauthenticated,
    UseDpopNonce,
    Forbidden,
    ApprovalDenied,
    UnknownTool,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    InvalidTransaction,
    ApprovalPending,
    PayloadTooLarge,
    InvalidParams,
    ValidationFailed,
    RateLimited,
    InternalError,
    TargetError,
    Unavailable,
    OutcomeUnknown,
  ].map((cls) => [cls.code, cls]),
);

/** The error a reply's `{error: {...}}` body names; an unknown code is `InternalError`. */
export function errorFromBody(body: unknown, extra: ErrorInit = {}): HandshakeError {
  const detail = (body as { error?: ErrorDetail } | null)?.error;
  if (!detail || typeof detail.code !== "string") {
    return new InternalError("malformed error reply");
  }
  const cls = ERRORS[detail.code] ?? InternalError;
  return new cls(detail.message, {
    ...extra,
    transactionId: detail.transaction_id ?? null,
    retryAfterS: detail.retry_after_s ?? null,
    ...(typeof detail.retryable === "boolean" ? { retryable: detail.retryable } : {}),
  });
}
