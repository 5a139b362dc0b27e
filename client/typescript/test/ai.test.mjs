// An AI SDK agent on the SDK's mock language model calls mediated tools through
// aiSdkTools: a restricted payment goes pending, is approved by a human, and the agent
// finishes it with handshake_wait. Over the gateway and over NATS.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { generateText, stepCountIs } from "ai";
import { MockLanguageModelV3 } from "ai/test";
import { createLocalJWKSet, jwtVerify } from "jose";
import { aiSdkTools, hostName, WAIT_TOOL } from "../dist/ai.js";
import { approveWhenListed, client, F, TRANSPORTS } from "./support.mjs";

const USAGE = {
  inputTokens: { total: 1, noCache: 1, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: 1, text: 1, reasoning: undefined },
};
const PAYMENT = { to_account: "acct_4f9d2a", amount: 3000, currency: "EUR" };

const call = (toolName, input) => ({
  content: [
    { type: "tool-call", toolCallId: `c-${toolName}`, toolName, input: JSON.stringify(input) },
  ],
  finishReason: { unified: "tool-calls", raw: undefined },
  usage: USAGE,
  warnings: [],
});
const say = (text) => ({
  content: [{ type: "text", text }],
  finishReason: { unified: "stop", raw: undefined },
  usage: USAGE,
  warnings: [],
});

function toolResults(prompt) {
  return prompt
    .filter((m) => m.role === "tool")
    .flatMap((m) => m.content)
    .filter((p) => p.type === "tool-result")
    .map((p) => p.output?.value ?? p.output);
}

for (const t of TRANSPORTS) {
  describe(`aiSdkTools over ${t === "http" ? "the gateway" : "NATS"}`, () => {
    let hs;
    let approver;
    before(async () => {
      hs = await client(t, `${t}-ai`);
      approver = await client("nats", "approver");
    });
    after(async () => {
      await hs.close();
      await approver.close();
    });

    it("exposes exactly the session's tools, plus handshake_wait", async () => {
      const tools = await aiSdkTools(hs);
      const expected = (await hs.tools()).map((x) => hostName(x.name));
      assert.deepEqual(Object.keys(tools).sort(), [...expected, WAIT_TOOL].sort());
      assert.ok(tools.payments__send_payment.description.includes("needs approval"));
    });

    it("a restricted call goes pending, is approved, and handshake_wait finishes it", async () => {
      const tools = await aiSdkTools(hs, { approvalWaitMs: 1500 });
      let step = 0;
      const model = new MockLanguageModelV3({
        doGenerate: async ({ prompt }) => {
          step += 1;
          const seen = toolResults(prompt);
          if (step === 1) return call("payments__send_payment", PAYMENT);
          if (step === 2) {
            const last = seen.at(-1);
            assert.equal(last.status, "pending_approval", JSON.stringify(last.status));
            await approveWhenListed(approver, last.transaction_id);
            return call(WAIT_TOOL, { transaction_id: last.transaction_id });
          }
          return say(JSON.stringify(seen.at(-1)));
        },
      });
      const out = await generateText({
        model,
        tools,
        prompt: "Pay 3000 EUR to acct_4f9d2a",
        stopWhen: stepCountIs(5),
      });
      const final = JSON.parse(out.text);
      assert.equal(final.status, "ok");
      const { payload } = await jwtVerify(final.receipt, createLocalJWKSet(await hs.keys()));
      assert.equal(payload.txn, final.transaction_id);
      assert.equal(payload.tool, "payments.send_payment");
      assert.deepEqual(
        payload.approvals.map((a) => a.by),
        [F.subs.approver],
      );
      assert.equal(out.steps.length, 3);
    });

    it("a refused call is an error result the model can read, not a throw", async () => {
      const tools = await aiSdkTools(hs);
      const bad = await tools.payments__send_payment.execute(
        { amount: "lots" },
        { toolCallId: "x", messages: [] },
      );
      assert.equal(bad.status, "error");
      assert.equal(bad.code, "invalid_params");
      const unknown = await tools[WAIT_TOOL].execute(
        { transaction_id: "nope" },
        { toolCallId: "y", messages: [] },
      );
      assert.equal(unknown.code, "invalid_transaction");
    });
  });
}
