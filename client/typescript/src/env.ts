/** Settings the way the CLI and the Python client read them: `HANDSHAKE_*` variables,
 * else the running `mcp-handshake up` stack's `stack.json` under `$HANDSHAKE_HOME`. */

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import type { ConnectOptions } from "./client.js";
import { ProofKey } from "./keys.js";

type Env = Record<string, string | undefined>;

/** Where the agent's proof key lives, whatever the current directory:
 * `$HANDSHAKE_AGENT_KEY`, else `$XDG_CONFIG_HOME/mcp-handshake/agent.pem`, else
 * `~/.config/mcp-handshake/agent.pem` (as the Python client). */
export function defaultAgentKey(env: Env = process.env): string {
  const home = env.HOME || homedir();
  const override = env.HANDSHAKE_AGENT_KEY;
  if (override)
    return override.startsWith("~/") ? join(home, override.slice(2)) : resolve(override);
  const xdg = env.XDG_CONFIG_HOME ?? "";
  const config = xdg && isAbsolute(xdg) ? xdg : join(home, ".config");
  return join(config, "mcp-handshake", "agent.pem");
}

function stackFile(env: Env): Record<string, string> {
  const path = join(env.HANDSHAKE_HOME || ".handshake", "stack.json");
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, string>;
  } catch {
    return {};
  }
}

/**
 * Connect options from the environment: the gateway (`HANDSHAKE_GATEWAY_URL`) or NATS
 * (`HANDSHAKE_NATS_URL`, `HANDSHAKE_NATS_USER`, `HANDSHAKE_NATS_PASSWORD_FILE`), else what
 * `stack.json` names (its gateway when it has one, unless `transport` says `nats`); the
 * session from `$HANDSHAKE_SESSION`; the proof key at `defaultAgentKey()`, created (0600)
 * on first use.
 */
export async function optionsFromEnv(
  transport?: "http" | "nats",
  env: Env = process.env,
): Promise<ConnectOptions> {
  const stack = stackFile(env);
  const opts: ConnectOptions = {
    session: { env: "HANDSHAKE_SESSION" },
    proofKey: await ProofKey.loadOrCreate(defaultAgentKey(env)),
  };
  if (env.HANDSHAKE_SUBJECT_PREFIX) opts.prefix = env.HANDSHAKE_SUBJECT_PREFIX;
  const gateway = env.HANDSHAKE_GATEWAY_URL || (env.HANDSHAKE_NATS_URL ? "" : stack.gateway_url);
  if (gateway && transport !== "nats") return { ...opts, gatewayUrl: gateway };
  if (transport === "http") throw new TypeError("no gateway URL: set HANDSHAKE_GATEWAY_URL");
  const natsUrl = env.HANDSHAKE_NATS_URL || stack.nats_url || "nats://127.0.0.1:4222";
  const fromStack = !env.HANDSHAKE_NATS_URL && !env.HANDSHAKE_NATS_USER;
  const user = env.HANDSHAKE_NATS_USER || (fromStack ? stack.nats_user : undefined);
  const passwordFile =
    env.HANDSHAKE_NATS_PASSWORD_FILE || (fromStack ? stack.nats_password_file : undefined);
  return {
    ...opts,
    natsUrl,
    ...(user ? { natsUser: user } : {}),
    ...(passwordFile ? { natsPasswordFile: passwordFile } : {}),
  };
}
