"""Execute's policy decision: the call bound under the policy in force at execute.

The agent Cedar sees is the sending NATS identity and the key that proves
possession. The proof is verified after the decision (the decision says whether
one is needed), so when the proving key is not the session's own key the
decision is taken again with it and must come out the same.
"""

from __future__ import annotations

from mcp_handshake.services.core.bind import Bound, bind
from mcp_handshake.services.core.dpop import DPOP_HEADER
from mcp_handshake.services.core.proofs import VerifiedProof
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.policy import Agent, Policy
from mcp_handshake.services.runtime.endpoint import Request
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.protocol import PROOF_HEADER
from mcp_handshake.shared.wire import ExecuteRequest

__all__ = ["bound_call", "still_allowed"]


def bound_call(
    tools: ToolRegistry, policy: Policy, req: Request[ExecuteRequest], jkt: str | None
) -> Bound | None:
    """The call bound under the policy in force, or ``None`` when it cannot be what was
    authorized (unknown tool, params that fail the schema): consume then burns the token.
    The decision's verdict, policy ids and set hash go to the request's audit facts."""
    body, caller = req.body, req.caller
    tool = tools.find(body.tool)
    if tool is None:
        return None
    proof = req.header(PROOF_HEADER) is not None or req.header(DPOP_HEADER) is not None
    agent = Agent(nats_user=req.nats_user, jkt=jkt, proof=proof)
    try:
        bound = bind(tool, body.params, lambda p: policy.decide(
            caller, tool.name, p, phase="execute", agent=agent))  # fmt: skip
    except HandshakeError:
        return None
    req.facts.update(bound.plan.rules.facts())
    return bound


def still_allowed(
    tools: ToolRegistry,
    policy: Policy,
    req: Request[ExecuteRequest],
    bound: Bound,
    proof: VerifiedProof | None,
) -> bool:
    """Policy's answer again when the proving key is not the one it was asked about."""
    if proof is None or proof.thumbprint == req.caller.jkt:
        return True
    again = bound_call(tools, policy, req, proof.thumbprint)
    return again is not None and again.plan.rules.verdict == bound.plan.rules.verdict
