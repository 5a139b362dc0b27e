"""The policy in force in one process: loaded at start, replaced on reload.

A worker starts only with a policy set that parses and validates against the
tool catalog's schema (:class:`PolicyError` names the policy and the line). On
SIGHUP, or when the file changes, the set is loaded again; a set that fails is
refused, the old one stays in force, and the alarm is raised (an error log, the
``handshake_policy_alarm`` gauge, and ``status``) until a good set loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mcp_handshake.services.core.config import PolicyDefaults
from mcp_handshake.services.core.policy import Caller, Rules
from mcp_handshake.services.core.tools import Tool
from mcp_handshake.services.policy.annotations import ConfirmationRules
from mcp_handshake.services.policy.compiled import CompiledPolicy, PolicyError, compile_policy
from mcp_handshake.services.policy.evaluate import Agent, Phase, decide, listable

__all__ = ["Policy", "load_policy"]

log = logging.getLogger(__name__)


class Policy:
    """The policy set in force; every decision goes through :meth:`decide`."""

    def __init__(
        self, compiled: CompiledPolicy, tools: Iterable[Tool], path: Path | None = None
    ) -> None:
        self._compiled = compiled
        self._tools = list(tools)
        self.path = path
        #: Why the last reload was refused (``None`` once a good set is in force).
        self.alarm: str | None = None
        self._mtime = path.stat().st_mtime_ns if path is not None else 0
        #: The worker's gauges: ``policy_alarm`` is 1 while a refused reload stands.
        self.gauges: dict[str, float] = {}
        #: The audit stream's duplicate window is sized at start from this: a reload
        #: may not let transactions live longer (a replay could then go unnoticed).
        self.lifetime_at_start = self.max_lifetime_s

    def status(self) -> dict[str, Any]:
        """What ``status`` shows: the set in force, and the alarm if one is raised."""
        return {"hash": self.hash, "policies": len(self._compiled.ids), "alarm": self.alarm}

    @property
    def current(self) -> CompiledPolicy:
        return self._compiled

    @property
    def hash(self) -> str:
        return self._compiled.hash

    @property
    def defaults(self) -> PolicyDefaults:
        return self._compiled.defaults

    def decide(
        self,
        caller: Caller,
        tool: str,
        params: Mapping[str, Any],
        *,
        phase: Phase,
        agent: Agent | None = None,
    ) -> Rules:
        return decide(self._compiled, caller, tool, params, phase=phase, agent=agent or Agent())

    def listable(self, caller: Caller, tool: str) -> bool:
        return listable(self._compiled, caller, tool)

    def confirmation(self, tool: str) -> ConfirmationRules | None:
        return self._compiled.confirmation(tool)

    def token_ttl_s(self, tool: str) -> float:
        """The token lifetime after approval: the shortest any permit of the tool names."""
        action = self._compiled.actions.get(tool)
        ttls = [e.token_ttl_s for e in action.effects.values() if e.token_ttl_s] if action else []
        return min(ttls, default=self.defaults.token_ttl_s)

    @property
    def all_approver_roles(self) -> frozenset[str]:
        """Every role that approves some tool: who may list approvals and read status."""
        c = self._compiled
        return c.defaults.approver_roles.union(*(e.approver_roles for e in c.all_effects()))

    @property
    def max_lifetime_s(self) -> float:
        """The longest a transaction can stay usable: pending approval, then its token."""
        return _lifetime(self._compiled)

    def reload(self) -> bool:
        """Load the file again; on failure keep the set in force and raise the alarm."""
        if self.path is None:
            return False
        try:
            self._mtime = self.path.stat().st_mtime_ns
            text = self.path.read_text()
            compiled = compile_policy(text, self._tools, self.defaults, str(self.path))
            _within_lifetime(compiled, self.lifetime_at_start, str(self.path))
        except (OSError, PolicyError) as exc:
            self.alarm = str(exc)
            self.gauges["policy_alarm"] = 1.0
            log.error("policy reload refused; the policy in force stays: %s", exc,
                      extra={"policy_hash": self.hash})  # fmt: skip
            return False
        self._compiled, self.alarm = compiled, None
        self.gauges["policy_alarm"] = 0.0
        log.info("policy reloaded", extra={"policy_hash": compiled.hash})
        return True

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            return self.path.stat().st_mtime_ns != self._mtime
        except OSError:
            return True

    async def watch(self) -> None:
        """Reload on SIGHUP and when the file changes (every ``watch_s``), until cancelled."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            interval = self.defaults.watch_s
            while True:
                await asyncio.sleep(interval or 3600)
                if interval and self.changed():
                    self.reload()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)


def _lifetime(c: CompiledPolicy) -> float:
    effects = list(c.all_effects())
    approval = max([c.defaults.approval_ttl_s, *(e.approval_ttl_s or 0 for e in effects)])
    token = max([c.defaults.token_ttl_s, *(e.token_ttl_s or 0 for e in effects)])
    return approval + token


def _within_lifetime(c: CompiledPolicy, limit: float, source: str) -> None:
    if _lifetime(c) > limit:
        raise PolicyError(
            f"{source}: transactions could live {_lifetime(c):g} s, longer than the "
            f"{limit:g} s the audit stream's duplicate window was sized for at start: "
            "restart the workers to apply it"
        )


def load_policy(
    path: Path, tools: Iterable[Tool], defaults: PolicyDefaults | None = None
) -> Policy:
    """Load and validate the policy file; ``PolicyError`` says which policy, where."""
    tools = list(tools)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    compiled = compile_policy(text, tools, defaults or PolicyDefaults(), str(path))
    return Policy(compiled, tools, path)
