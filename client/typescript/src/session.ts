/**
 * Where session tokens come from: a string, an env var, a file, a command or a
 * callback. Each provider re-reads its source when the cached token is within
 * `refreshS` seconds of its `exp`, so long-running agents keep working across
 * session refreshes.
 */

import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { decodeJwt } from "jose";

export interface SessionProvider {
  token(): Promise<string>;
}

/** What `HandshakeClient.connect({ session })` accepts. */
export type SessionSource =
  | string
  | SessionProvider
  | (() => string | Promise<string>)
  | { env: string }
  | { file: string }
  | { command: string[] };

/** `exp` read without verification: only to know when to refresh, never to trust. */
function expiry(token: string): number {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === "number" ? exp : Number.POSITIVE_INFINITY;
  } catch {
    return 0;
  }
}

/** A provider that caches its token until `refreshS` before expiry. */
export class CachedSession implements SessionProvider {
  private cached: string | null = null;
  private exp = 0;
  private loading: Promise<string> | null = null;

  constructor(
    private readonly load: () => Promise<string>,
    readonly refreshS = 30,
  ) {}

  async token(): Promise<string> {
    if (this.cached !== null && Date.now() / 1000 < this.exp - this.refreshS) {
      return this.cached;
    }
    // One load at a time: concurrent callers share it.
    this.loading ??= this.load()
      .then((value) => {
        const token = value.trim();
        if (!token) throw new Error("the session source gave an empty token");
        this.cached = token;
        this.exp = expiry(token);
        return token;
      })
      .finally(() => {
        this.loading = null;
      });
    return this.loading;
  }
}

export function staticSession(token: string): SessionProvider {
  return new CachedSession(async () => token);
}

export function envSession(name = "HANDSHAKE_SESSION"): SessionProvider {
  return new CachedSession(async () => {
    const value = process.env[name];
    if (!value) throw new Error(`no session token in $${name}`);
    return value;
  });
}

export function fileSession(path: string): SessionProvider {
  return new CachedSession(() => readFile(path, "utf8"));
}

/** Runs a command (e.g. an IdP CLI; no shell) and uses what it prints. */
export function commandSession(argv: string[]): SessionProvider {
  const [file, ...args] = argv;
  if (!file) throw new TypeError("the session command is empty");
  const run = promisify(execFile);
  return new CachedSession(async () => {
    try {
      return (await run(file, args, { encoding: "utf8", maxBuffer: 1 << 20 })).stdout;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      throw new Error(`the session command failed (${String(code ?? "error")})`);
    }
  });
}

export function callbackSession(fn: () => string | Promise<string>): SessionProvider {
  return new CachedSession(async () => String(await fn()));
}

/** Any accepted session source as a provider; nothing means `$HANDSHAKE_SESSION`. */
export function asSessionProvider(source?: SessionSource): SessionProvider {
  if (source === undefined) return envSession();
  if (typeof source === "string") return staticSession(source);
  if (typeof source === "function") return callbackSession(source);
  if ("token" in source && typeof source.token === "function") return source;
  if ("env" in source) return envSession(source.env);
  if ("file" in source) return fileSession(source.file);
  if ("command" in source) return commandSession(source.command);
  throw new TypeError(
    "session must be a token, a provider, a callback, {env}, {file} or {command}",
  );
}
