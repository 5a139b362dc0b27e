/**
 * Batches for `callMany` and `stream` (protocol.md, "Batch"): the calls in flight share
 * requests, as the Python client's (client/mcp_handshake/client/_batch.py).
 *
 * A `Batcher` collects the calls started in the same turn of the event loop (at most
 * `window` of them) and runs them as one `authorize.batch` and one `execute.batch`, with
 * one batch proof for the operations above the public tier. Each call still gets its own
 * grant, token, result, error and verified receipt; an operation waiting for approval is
 * executed on its own once approved. A mediator without batch workers (no responders) is
 * used one call at a time instead.
 */

import { HandshakeError, Unavailable } from "./errors.js";
import { NO_BATCHES } from "./transport.js";
import type { Grant } from "./types.js";

export type Params = Record<string, unknown>;

/** Most operations per batch request (the mediator's default limit). */
export const MAX_OPS = 256;
/** Most bytes of params per batch request, under the default 64 KiB request limit. */
export const MAX_BYTES = 48 * 1024;
/** Bytes of one operation besides its params (ids, token, JSON punctuation). */
export const OP_OVERHEAD = 240;

/** One operation of `authorizeBatch`: the single authorize body. */
export interface AuthorizeOp {
  tool: string;
  params: Params;
  context?: Params;
}

/** One operation of `executeBatch`: its grant and what it was granted for (a
 * `PendingCall` is one). */
export interface ExecuteOp {
  grant: Grant;
  tool: string;
  params: Params;
}

/** Whether an error is the one a mediator without batch workers answers. */
export function noBatches(err: unknown): boolean {
  return err instanceof Unavailable && err.message === NO_BATCHES;
}

/** What a `Batcher` needs of the client. */
export interface BatchCalls<R> {
  /** Per operation, its grant or its error; a whole-request error is thrown. */
  authorizeBatch(ops: AuthorizeOp[]): Promise<(Grant | HandshakeError)[]>;
  /** Per operation, its result (receipt verified) or its error. */
  executeBatch(ops: ExecuteOp[]): Promise<(R | HandshakeError)[]>;
  /** One operation alone (both phases). */
  call(tool: string, params: Params): Promise<R>;
  /** One granted operation executed alone. */
  execute(op: ExecuteOp): Promise<R>;
  /** Wait for approval of a grant, then execute it alone. */
  wait(op: ExecuteOp): Promise<R>;
}

interface Item<R> {
  tool: string;
  params: Params;
  size: number;
  resolve: (value: R) => void;
  reject: (err: unknown) => void;
  done: boolean;
}

export class Batcher<R> {
  private readonly window: number;
  private queue: Item<R>[] = [];
  private scheduled = false;
  private supported = true;

  constructor(
    private readonly calls: BatchCalls<R>,
    window: number,
  ) {
    this.window = Math.max(1, Math.min(window, MAX_OPS));
  }

  /** Both phases for one operation, in a batch with the calls started alongside it. */
  call(tool: string, params: Params): Promise<R> {
    const size = Buffer.byteLength(JSON.stringify(params) ?? "", "utf8");
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ tool, params, size, resolve, reject, done: false });
      if (this.queue.length >= this.window) {
        this.flush();
      } else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const items = this.queue;
    this.queue = [];
    for (const chunk of chunks(items)) void this.run(chunk);
  }

  private async run(items: Item<R>[]): Promise<void> {
    try {
      if (this.supported) await this.batched(items);
      else await Promise.all(items.map((i) => this.single(i)));
    } catch (err) {
      // A HandshakeError for all of them, or a bug: none is left waiting.
      for (const item of items) settle(item, err);
    }
  }

  private single(item: Item<R>): Promise<void> {
    return into(item, () => this.calls.call(item.tool, item.params));
  }

  private async batched(items: Item<R>[]): Promise<void> {
    let grants: (Grant | HandshakeError)[];
    try {
      grants = await this.calls.authorizeBatch(
        items.map((i) => ({ tool: i.tool, params: i.params })),
      );
    } catch (err) {
      if (!noBatches(err)) throw err;
      this.supported = false;
      await Promise.all(items.map((i) => this.single(i)));
      return;
    }
    const ready: [Item<R>, ExecuteOp][] = [];
    items.forEach((item, k) => {
      const grant = grants[k] as Grant | HandshakeError;
      if (grant instanceof HandshakeError) {
        settle(item, grant);
        return;
      }
      const op = { grant, tool: item.tool, params: item.params };
      if (grant.status === "pending_approval") {
        void into(item, () => this.calls.wait(op)); // alone, once approved
      } else {
        ready.push([item, op]);
      }
    });
    if (ready.length === 0) return;
    let outcomes: (R | HandshakeError)[];
    try {
      outcomes = await this.calls.executeBatch(ready.map(([, op]) => op));
    } catch (err) {
      if (!noBatches(err)) throw err;
      // Nobody received the batch, so no token was used: execute each alone.
      await Promise.all(ready.map(([item, op]) => into(item, () => this.calls.execute(op))));
      return;
    }
    ready.forEach(([item], k) => {
      const outcome = outcomes[k] as R | HandshakeError;
      if (outcome instanceof HandshakeError) settle(item, outcome);
      else if (!item.done) {
        item.done = true;
        item.resolve(outcome);
      }
    });
  }
}

/** Items split so that no batch request passes the mediator's default limits. */
function chunks<R>(items: Item<R>[]): Item<R>[][] {
  const out: Item<R>[][] = [];
  let size = 0;
  for (const item of items) {
    const cost = item.size + OP_OVERHEAD;
    const last = out[out.length - 1];
    if (last === undefined || last.length >= MAX_OPS || size + cost > MAX_BYTES) {
      out.push([item]);
      size = cost;
    } else {
      last.push(item);
      size += cost;
    }
  }
  return out;
}

function settle<R>(item: Item<R>, err: unknown): void {
  if (!item.done) {
    item.done = true;
    item.reject(err);
  }
}

async function into<R>(item: Item<R>, work: () => Promise<R>): Promise<void> {
  let result: R;
  try {
    result = await work();
  } catch (err) {
    settle(item, err);
    return;
  }
  if (!item.done) {
    item.done = true;
    item.resolve(result);
  }
}
