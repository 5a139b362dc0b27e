/** Protocol v1 over the HTTP gateway (docs/gateway.md), with fetch and DPoP proofs. */

import {
  errorFromBody,
  InternalError,
  NotFound,
  OutcomeUnknown,
  Unavailable,
  UseDpopNonce,
} from "./errors.js";
import {
  AUTHORIZATION_HEADER,
  DPOP_HEADER,
  isBatchOp,
  NO_BATCHES,
  type Request,
  type Transport,
} from "./transport.js";

interface Route {
  method: "GET" | "POST";
  path: string;
  query?: Record<string, string>;
  /** The body sent; GET routes send none. */
  body?: Record<string, unknown>;
}

function route(req: Request): Route {
  const { op, body } = req;
  const txn = encodeURIComponent(String(body.transaction_id ?? ""));
  switch (op) {
    case "tools":
      return { method: "GET", path: "/v1/tools" };
    case "keys":
      return { method: "GET", path: "/v1/keys" };
    case "status": {
      const wait = body.wait_s;
      return {
        method: "GET",
        path: `/v1/status/${txn}`,
        ...(typeof wait === "number" ? { query: { wait: String(wait) } } : {}),
      };
    }
    case "approvals.list":
      return { method: "GET", path: "/v1/approvals" };
    case "approvals.decide": {
      const { transaction_id: _, ...rest } = body;
      return { method: "POST", path: `/v1/approvals/${txn}/decide`, body: rest };
    }
    case "authorize.batch":
      return { method: "POST", path: "/v1/authorize/batch", body };
    case "execute.batch":
      return { method: "POST", path: "/v1/execute/batch", body };
    default: // authorize, execute, reconcile
      return { method: "POST", path: `/v1/${op}`, body };
  }
}

export class HttpTransport implements Transport {
  readonly kind = "http";
  private readonly base: string;
  /** The last `DPoP-Nonce` the gateway sent (when it requires nonces). */
  private nonce: string | undefined;

  constructor(gatewayUrl: string) {
    this.base = gatewayUrl.replace(/\/+$/, "");
    new URL(this.base); // a clear TypeError now rather than on the first call
  }

  async request<T>(req: Request): Promise<T> {
    try {
      try {
        return await this.attempt<T>(req);
      } catch (err) {
        // A nonce refusal leaves the token unused: retry once with the nonce given.
        if (err instanceof UseDpopNonce && err.dpopNonce && req.proof !== undefined) {
          return await this.attempt<T>(req);
        }
        throw err;
      }
    } catch (err) {
      // A gateway without the batch routes forwarded nothing (no token was used): the
      // client makes the calls one by one.
      if (isBatchOp(req.op) && err instanceof NotFound) throw new Unavailable(NO_BATCHES);
      throw err;
    }
  }

  private async attempt<T>(req: Request): Promise<T> {
    const r = route(req);
    const url = new URL(this.base + r.path);
    for (const [k, v] of Object.entries(r.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { ...req.headers };
    if (req.session !== undefined) headers[AUTHORIZATION_HEADER] = `Bearer ${req.session}`;
    if (req.proof !== undefined) {
      const htu = this.base + r.path;
      Object.assign(
        headers,
        await req.proof({
          transport: "http",
          htm: r.method,
          htu,
          ...(this.nonce ? { nonce: this.nonce } : {}),
        }),
      );
      if (headers[DPOP_HEADER] !== undefined && req.session !== undefined) {
        headers[AUTHORIZATION_HEADER] = `DPoP ${req.session}`;
      }
    }
    if (r.body !== undefined) headers["Content-Type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(url, {
        method: r.method,
        headers,
        ...(r.body !== undefined ? { body: JSON.stringify(r.body) } : {}),
        signal: AbortSignal.timeout(req.timeoutMs),
      });
    } catch (err) {
      const name = (err as Error).name;
      if (name === "TimeoutError" && req.consumesToken) {
        throw new OutcomeUnknown("no answer in time: the operation may or may not have run");
      }
      throw new Unavailable(`cannot reach the gateway (${name})`);
    }
    const nonce = res.headers.get("DPoP-Nonce");
    if (nonce) this.nonce = nonce;
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      throw notJson(res.status, req.consumesToken === true);
    }
    if (res.status === 200 || res.status === 202) return body as T;
    throw errorFromBody(body, nonce ? { dpopNonce: nonce } : {});
  }

  async close(): Promise<void> {}
}

/** A reply that is not the gateway's JSON (a proxy's error page, say): fail closed. */
function notJson(status: number, consumesToken: boolean): Error {
  const what = `the gateway answered ${status} without JSON`;
  if (status >= 500 && consumesToken) {
    return new OutcomeUnknown(`${what}: the operation may or may not have run`);
  }
  return status >= 500 ? new Unavailable(what) : new InternalError(what);
}
