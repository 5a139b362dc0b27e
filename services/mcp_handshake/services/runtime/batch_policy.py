"""The policy in force, for the operations of one batch: each distinct question asked once.

Cedar's answer depends only on the request it is given (principal, action,
resource, context) and the policy set in force, and the context of a request
holds only the attributes the action's policies read (``policy.reads``). So
operations of one batch that ask the same question (the same caller, tool,
phase and agent, and the same params where the policies read them) get the same
answer, and :class:`BatchDecisions` asks Cedar once for all of them; every
operation still gets its decision, with the same verdict, deciding policies and
rules as alone. Nothing is shared across batches, nor with a set reloaded
midway, nor for policies that read the time (the clock moves while a batch runs)
or the whole context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.policy import Agent, Phase, Policy
from mcp_handshake.services.policy.compiled import CompiledPolicy

__all__ = ["BatchDecisions"]

_encode = msgspec.json.encode


class BatchDecisions(Policy):
    """``policy`` for one batch: :meth:`decide` answers a question asked before from the
    first answer; everything else is ``policy``'s own (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:  # no super(): the policy's state is used
        self._policy = policy
        self._set: CompiledPolicy | None = None
        self._answers: dict[tuple[Any, ...], Rules] = {}
        #: Decisions taken by Cedar, and answered again (for tests and the bench).
        self.asked = 0
        self.reused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def decide(
        self,
        caller: Caller,
        tool: str,
        params: Mapping[str, Any],
        *,
        phase: Phase,
        agent: Agent | None = None,
    ) -> Rules:
        compiled = self._policy.current
        if compiled is not self._set:  # the first question, or a set reloaded midway
            self._set, self._answers = compiled, {}
        key = _question(compiled, caller, tool, params, phase, agent or Agent())
        rules = self._answers.get(key) if key is not None else None
        if rules is not None:
            self.reused += 1
            return rules
        rules = self._policy.decide(caller, tool, params, phase=phase, agent=agent)
        self.asked += 1
        if key is not None:
            self._answers[key] = rules
        return rules


def _question(
    compiled: CompiledPolicy,
    caller: Caller,
    tool: str,
    params: Mapping[str, Any],
    phase: str,
    agent: Agent,
) -> tuple[Any, ...] | None:
    """What the decision depends on, or ``None`` when it must be taken every time."""
    action = compiled.actions.get(tool)
    top = action.reads.top if action is not None else None
    if top is None or "time" in top:
        return None
    try:
        read = _encode(params) if "params" in top else b""
    except (TypeError, msgspec.EncodeError):
        return None
    return (caller, tool, phase, agent, read)
