/** Protocol v1 over NATS request-reply (docs/protocol.md), with the NATS JavaScript client. */

import { readFile } from "node:fs/promises";
import {
  connect,
  errors,
  headers as natsHeaders,
  type NatsConnection,
} from "@nats-io/transport-node";
import {
  errorFromBody,
  OutcomeUnknown,
  Unauthenticated,
  Unavailable,
  InternalError,
} from "./errors.js";
import {
  AUTHORIZATION_HEADER,
  isBatchOp,
  NO_BATCHES,
  type Request,
  type Transport,
} from "./transport.js";

export const DEFAULT_PREFIX = "handshake.v1";

export interface NatsOptions {
  /** `nats://host:port`, or several, comma-separated. */
  natsUrl: string;
  /** The agent's NATS identity (the bus lets it read only `_INBOX.<user>`). */
  natsUser?: string;
  natsPassword?: string;
  /** A file holding the password (the stack's `secrets/nats/<user>` layout). */
  natsPasswordFile?: string;
  /** Subject prefix (default `handshake.v1`). */
  prefix?: string;
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/g, "//***@");
}

export class NatsTransport implements Transport {
  readonly kind = "nats";

  private constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
  ) {}

  /** Connect; `Unavailable` (or `Unauthenticated` when the bus refuses the identity)
   * within seconds when that fails. */
  static async connect(opts: NatsOptions): Promise<NatsTransport> {
    const servers = opts.natsUrl
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    let pass = opts.natsPassword;
    if (pass === undefined && opts.natsPasswordFile !== undefined) {
      pass = (await readFile(opts.natsPasswordFile, "utf8")).trim();
    }
    const user = opts.natsUser;
    try {
      const nc = await connect({
        servers,
        name: "handshake-client-ts",
        inboxPrefix: user ? `_INBOX.${user}` : "_INBOX",
        ...(user ? { user, pass } : {}),
        timeout: 5000,
      });
      return new NatsTransport(nc, opts.prefix ?? DEFAULT_PREFIX);
    } catch (err) {
      const where = redact(servers.join(","));
      if (err instanceof errors.AuthorizationError) {
        throw new Unauthenticated(`NATS at ${where} refused this agent's identity`);
      }
      throw new Unavailable(`cannot connect to NATS at ${where} (${(err as Error).name})`);
    }
  }

  async request<T>(req: Request): Promise<T> {
    const hdrs = natsHeaders();
    if (req.session !== undefined) hdrs.set(AUTHORIZATION_HEADER, `Bearer ${req.session}`);
    for (const [name, value] of Object.entries(req.headers ?? {})) hdrs.set(name, value);
    if (req.proof !== undefined) {
      const proof = await req.proof({ transport: "nats", htm: "", htu: "" });
      for (const [name, value] of Object.entries(proof)) hdrs.set(name, value);
    }
    const subject = `${this.prefix}.${req.op}`;
    let msg;
    try {
      msg = await this.nc.request(subject, JSON.stringify(req.body), {
        timeout: req.timeoutMs,
        headers: hdrs,
      });
    } catch (err) {
      throw requestError(err, req, subject);
    }
    let body: unknown;
    try {
      body = msg.json();
    } catch {
      throw new InternalError("the reply is not JSON");
    }
    if (msg.headers?.get("Nats-Service-Error-Code")) throw errorFromBody(body);
    return body as T;
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

function requestError(err: unknown, req: Request, subject: string): Error {
  const cause = err instanceof errors.RequestError && err.cause ? err.cause : err;
  if (cause instanceof errors.NoRespondersError) {
    // Nobody received it: nothing ran, no token was used.
    return new Unavailable(isBatchOp(req.op) ? NO_BATCHES : `no service answers ${subject}`);
  }
  if (cause instanceof errors.TimeoutError) {
    return req.consumesToken
      ? new OutcomeUnknown("no answer in time: the operation may or may not have run")
      : new Unavailable(`no answer from ${subject} in time`);
  }
  if (cause instanceof errors.PermissionViolationError) {
    return new Unauthenticated(`this agent's NATS identity may not use ${subject}`);
  }
  return new Unavailable(`NATS request failed (${(cause as Error).name})`);
}
