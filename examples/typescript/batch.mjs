// Many operations at once: callMany sends the calls in flight as batches (one
// authorize.batch and one execute.batch under one proof, over NATS or the gateway), each
// call keeping its own grant, token, result or error, and verified receipt.
//
//   mcp-handshake up &
//   export HANDSHAKE_SESSION=$(mcp-handshake token mint --sub alice --role billing --bind-key)
//   node batch.mjs
//
// Prints one line per operation: {"index", "tool", "status": "ok", "tier", "transaction_id"}
// or {"index", "tool", "status": "error", "code"}.

import { HandshakeClient, HandshakeError } from "mcp-handshake";

const calls = [
  ["payments.get_exchange_rate", { base: "EUR", quote: "USD" }],
  ["payments.get_exchange_rate", { base: "EUR", quote: "GBP" }],
  [
    "payments.create_invoice",
    { customer_id: "cus_8f3k2m9q", amount: 120, currency: "EUR" },
  ],
  [
    "payments.create_invoice",
    { customer_id: "cus_8f3k2m9q", amount: 80, currency: "EUR" },
  ],
  ["payments.list_invoices", { status: "open" }],
];

const hs = await HandshakeClient.fromEnv();
try {
  const outcomes = await hs.callMany(calls, { concurrency: 16 });
  outcomes.forEach((outcome, index) => {
    const tool = calls[index][0];
    const line =
      outcome instanceof HandshakeError
        ? { index, tool, status: "error", code: outcome.code }
        : {
            index,
            tool,
            status: "ok",
            tier: outcome.claims.tier,
            transaction_id: outcome.transactionId,
          };
    console.log(JSON.stringify(line));
  });
} finally {
  await hs.close();
}
