"""CrewAI: the mediated catalog as ``BaseTool``s (extra ``mcp-handshake[crewai]``).

CrewAI runs tools synchronously, so these need a ``SyncHandshakeClient``:

```python
hs = SyncHandshakeClient.from_env()
analyst = Agent(role="Billing clerk", goal="...", backstory="...", tools=crewai_tools(hs))
```
"""

from __future__ import annotations

from typing import Any

from crewai.tools import BaseTool
from pydantic import PrivateAttr

from mcp_handshake.shared.wire import ToolInfo

from .._sync import SyncHandshakeClient
from ._catalog import DEFAULT_APPROVAL_WAIT_S, MediatedTool, mediated

__all__ = ["MediatedCrewTool", "crewai_tools"]


class MediatedCrewTool(BaseTool):
    """A CrewAI tool whose every run is a handshake through the mediator."""

    _mediated: MediatedTool = PrivateAttr()

    def _run(self, **params: Any) -> dict[str, Any]:
        return self._mediated.invoke(params)

    async def _arun(self, **params: Any) -> dict[str, Any]:
        return await self._mediated.ainvoke(params)


def crewai_tools(
    client: SyncHandshakeClient,
    *,
    tools: list[ToolInfo] | None = None,
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S,
) -> list[BaseTool]:
    """One CrewAI tool per tool this caller may use; args are checked against the
    mediator's params JSON Schema (CrewAI builds a model from it) before the call."""
    made: list[BaseTool] = []
    for m in mediated(client, tools, approval_wait_s):
        tool = MediatedCrewTool(name=m.name, description=m.description, args_schema=m.schema)
        tool._mediated = m
        made.append(tool)
    return made
