"""A tool whose operation is an in-process function, like the FastMCP baseline's.

Loaded by the bench's workers (``PYTHONPATH`` is the bench folder): the same
answer as the baseline, with the whole handshake around it but no HTTP call
to a target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_handshake.services.core.tools import Tier, Tool


class RateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str = Field(pattern=r"^[A-Z]{3}$")
    quote: str = Field(pattern=r"^[A-Z]{3}$")


async def exchange_rate(params: Mapping[str, Any], ctx: Any) -> Any:
    return {"base": params["base"], "quote": params["quote"], "rate": 1.086957}


TOOLS = [
    Tool("bench.exchange_rate", "Exchange rate between two currencies (in-process).",
         RateParams, Tier.PUBLIC, "payments", exchange_rate),
]  # fmt: skip

POLICY = """
@id("bench.exchange_rate")
permit (principal, action == Action::"bench.exchange_rate", resource);
"""
