// The official TypeScript MCP SDK against the gateway's /mcp (run by
// tests/test_gateway_mcp_ts.py): discovery from the 401, a public call with a bearer
// (unbound) session, an internal call refused without DPoP and run with a DPoP proof (jose) on
// every request, a restricted call waiting (with progress) for its approval. Prints one
// JSON object.
import { createHash, randomUUID } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  discoverOAuthProtectedResourceMetadata,
  extractResourceMetadataUrl,
} from "@modelcontextprotocol/sdk/client/auth.js";
import { SignJWT, importJWK } from "jose";

const url = process.env.MCP_URL;
const session = process.env.MCP_SESSION;
// Without a key (no cnf.jkt): a bound session is no bearer token (RFC 9449 section 7.2).
const bearerSession = process.env.MCP_BEARER_SESSION;
const jwk = JSON.parse(process.env.MCP_DPOP_JWK);
const out = {};

const init = {
  jsonrpc: "2.0", id: 1, method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "ts", version: "1" } },
};
const first = await fetch(url, {
  method: "POST",
  headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
  body: JSON.stringify(init),
});
out.status = first.status;
out.resourceMetadataUrl = extractResourceMetadataUrl(first)?.toString();
out.metadata = await discoverOAuthProtectedResourceMetadata(url);

const rate = { name: "payments__get_exchange_rate", arguments: { base: "EUR", quote: "USD" } };
const invoices = { name: "payments__list_invoices", arguments: { limit: 1 } };

const bearer = new Client({ name: "ts-bearer", version: "1" });
await bearer.connect(new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${bearerSession}` } },
}));
out.tools = (await bearer.listTools()).tools.map((t) => t.name);
out.public = await bearer.callTool(rate);
out.withoutDpop = await bearer.callTool(invoices);
await bearer.close();

const key = await importJWK(jwk, "EdDSA");
const publicJwk = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
const ath = createHash("sha256").update(session).digest("base64url");
async function dpopFetch(input, init = {}) {
  const htu = String(input instanceof Request ? input.url : input).split("?")[0];
  const proof = await new SignJWT({ htm: init.method ?? "GET", htu, ath, jti: randomUUID() })
    .setProtectedHeader({ alg: "EdDSA", typ: "dpop+jwt", jwk: publicJwk })
    .setIssuedAt()
    .sign(key);
  const headers = new Headers(init.headers);
  headers.set("Authorization", `DPoP ${session}`);
  headers.set("DPoP", proof);
  return fetch(input, { ...init, headers });
}
const dpop = new Client({ name: "ts-dpop", version: "1" });
await dpop.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: dpopFetch }));
out.internal = await dpop.callTool(invoices);
// Restricted: the confirmation agent approves a small payment while the call waits,
// reporting progress.
const progress = [];
const payment = { to_account: "acct_4f9d2a", amount: 50, currency: "EUR" };
out.restricted = await dpop.callTool(
  { name: "payments__send_payment", arguments: payment }, undefined,
  { onprogress: (p) => progress.push(p.message ?? "") },
);
out.progress = progress;
await dpop.close();

console.log(JSON.stringify(out));
