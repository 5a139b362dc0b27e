// An AI SDK agent creating an invoice through the mediator.
//
// A scripted MockLanguageModelV3 (from `ai/test`) stands in for the LLM, so this runs
// with no API key; pass a real model (e.g. `openai("gpt-4.1")`) to let an LLM pick.
//
//   mcp-handshake up &
//   export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
//   node agent.mjs
//
// The client finds the stack by itself (HANDSHAKE_GATEWAY_URL or HANDSHAKE_NATS_URL,
// else the `stack.json` of `mcp-handshake up`); the proof key is the one
// `--bind-key` bound the session to (HANDSHAKE_AGENT_KEY, or ~/.config/mcp-handshake/agent.pem).

import { generateText, stepCountIs } from "ai";
import { MockLanguageModelV3 } from "ai/test";
import { HandshakeClient } from "mcp-handshake";
import { aiSdkTools } from "mcp-handshake/ai";

const INVOICE = { customer_id: "cus_8f3k2m9q", amount: 250, currency: "EUR" };
const USAGE = {
  inputTokens: {
    total: 1,
    noCache: 1,
    cacheRead: undefined,
    cacheWrite: undefined,
  },
  outputTokens: { total: 1, text: 1, reasoning: undefined },
};

/** The tool results the model has seen so far, newest last. */
function toolResults(prompt) {
  return prompt
    .filter((m) => m.role === "tool")
    .flatMap((m) => m.content)
    .filter((p) => p.type === "tool-result")
    .map((p) => p.output?.value ?? p.output);
}

/** Asks for one invoice, then reports the tool's output. */
const model = new MockLanguageModelV3({
  doGenerate: async ({ prompt }) => {
    const seen = toolResults(prompt);
    if (seen.length === 0) {
      return {
        content: [
          {
            type: "tool-call",
            toolCallId: "call-1",
            toolName: "payments__create_invoice",
            input: JSON.stringify(INVOICE),
          },
        ],
        finishReason: { unified: "tool-calls", raw: undefined },
        usage: USAGE,
        warnings: [],
      };
    }
    return {
      content: [{ type: "text", text: JSON.stringify(seen.at(-1)) }],
      finishReason: { unified: "stop", raw: undefined },
      usage: USAGE,
      warnings: [],
    };
  },
});

const hs = await HandshakeClient.fromEnv();
try {
  const tools = await aiSdkTools(hs);
  const { text } = await generateText({
    model,
    tools,
    prompt: "Invoice cus_8f3k2m9q 250 EUR",
    stopWhen: stepCountIs(3),
  });
  console.log(text);
} finally {
  await hs.close();
}
