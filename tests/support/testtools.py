"""Tools that exist only in the test deployment (loaded by the workers via PYTHONPATH)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_handshake.services.core.tools import HttpOperation, Tier, Tool


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=100)


class SlowPaymentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_account: str = Field(max_length=40)
    amount: float = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    #: The demo target answers this late (after the payment is made).
    delay_s: float = Field(ge=0, le=30)


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=30)


async def echo(params: Mapping[str, Any], ctx: Any) -> Any:
    return {"echo": params["text"], "txn": ctx.txn}


async def sleep(params: Mapping[str, Any], ctx: Any) -> Any:
    await asyncio.sleep(params["seconds"])
    return {"slept": params["seconds"]}


TOOLS = [
    Tool("test.echo", "Echo text back.", EchoParams, Tier.PUBLIC, "payments", echo),
    Tool("test.sleep", "Sleep, then answer.", SleepParams, Tier.PUBLIC, "payments", sleep),
    Tool("test.two_approvers", "Needs two approvers.", EchoParams, Tier.RESTRICTED, "payments",
         echo),
    Tool("test.short_approval", "Approval expires fast.", EchoParams, Tier.RESTRICTED,
         "payments", echo),
    Tool("test.limited", "Rate limited.", EchoParams, Tier.PUBLIC, "payments", echo),
    Tool("test.slow_payment", "Send a payment; the target answers late.", SlowPaymentParams,
         Tier.INTERNAL, "payments",
         HttpOperation("POST", "/v1/payments", query=("delay_s",),
                       body=("to_account", "amount", "currency"), idempotency_key=True)),
    Tool("test.slow_plain_post", "A POST the target does not de-duplicate.",
         SlowPaymentParams, Tier.PUBLIC, "payments",
         HttpOperation("POST", "/v1/payments", query=("delay_s",),
                       body=("to_account", "amount", "currency"))),
]  # fmt: skip
