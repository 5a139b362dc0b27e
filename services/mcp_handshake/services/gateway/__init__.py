"""The HTTP gateway (``mcp-handshake worker gateway``): protocol v1 over HTTP.

A stateless proxy for agents that speak HTTP: each call is translated to the
NATS request of the same name, under the gateway's own NATS identity, with
the agent's session, token and proof passed on for the workers to check.
DPoP proofs (RFC 9449) are verified by the execute worker, not here. See
``docs/gateway.md``.
"""
