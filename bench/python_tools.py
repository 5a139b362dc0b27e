"""The demo tools as Python, as they were before the demo became a catalog: the
baseline of ``catalog_bind.py``."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from mcp_handshake.services.core.checks import AstRule, ParamCheck
from mcp_handshake.services.core.tools import HttpOperation, Tier, Tool

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
CustomerId = Annotated[
    str, Field(pattern=r"^cus_[A-Za-z0-9]{8,32}$", description="Customer id, e.g. cus_8f3k2m9q")
]

# Numbers arrive as JSON numbers or as plain decimal strings, and are hashed as
# JSON numbers. The published schema says exactly that (``x-normalized``,
# ``x-decimal-places``; docs/protocol.md, "Params: schema, normalization,
# hash"): a client in any language must be able to compute the params hash
# from the schema alone, so nothing is coerced that the schema does not show.
# [0-9], never \d: Python's \d also matches other scripts' digits.
_INTEGER_TEXT = "(0|[1-9][0-9]{0,17})"
_AMOUNT_TEXT = "(0|[1-9][0-9]{0,9})([.][0-9]{1,2})?"
AMOUNT_MAX = 1_000_000_000


def _json_integer(value: Any) -> Any:
    """An integer param: a JSON number with no fraction, or a plain digit string."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, str) and not re.fullmatch(_INTEGER_TEXT, value):
        raise ValueError("integer text must be plain digits")
    return value


def _json_amount(value: Any) -> Any:
    """An amount: a JSON number, or a plain decimal string with at most 2 places."""
    if isinstance(value, str) and not re.fullmatch(_AMOUNT_TEXT, value):
        raise ValueError("amount text must be plain digits with at most 2 decimal places")
    return value


def _integer_schema(minimum: int, maximum: int, description: str) -> dict[str, Any]:
    bounds = {"minimum": minimum, "maximum": maximum}
    return {
        "anyOf": [
            {"type": "integer", **bounds},
            {"type": "string", "pattern": f"^{_INTEGER_TEXT}$"},
        ],
        "x-normalized": {"type": "integer", **bounds},
        "description": f"{description}; a JSON integer or a digit string, "
        'hashed as a JSON integer ("20" -> 20)',
    }


Amount = Annotated[
    Decimal,
    BeforeValidator(_json_amount),
    Field(gt=0, le=Decimal(AMOUNT_MAX), decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": AMOUNT_MAX},
                {"type": "string", "pattern": f"^{_AMOUNT_TEXT}$"},
            ],
            "x-decimal-places": 2,
            "x-normalized": {"type": "number", "exclusiveMinimum": 0, "maximum": AMOUNT_MAX},
            "description": f"Amount, > 0 and <= {AMOUNT_MAX}, at most 2 decimal places; "
            'a JSON number or a decimal string, hashed as a JSON number ("250.50" -> 250.5)',
        }
    ),
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeRateParams(_Params):
    base: Currency
    quote: Currency


class ListInvoicesParams(_Params):
    status: Literal["open", "paid"] | None = None
    limit: Annotated[
        int,
        BeforeValidator(_json_integer),
        WithJsonSchema(_integer_schema(1, 100, "Most invoices to list")),
    ] = Field(20, ge=1, le=100)


class CreateInvoiceParams(_Params):
    customer_id: CustomerId
    amount: Amount
    currency: Currency
    memo: str | None = Field(None, max_length=200)


class GetCustomerParams(_Params):
    # The shape is loose on purpose: the confidential tier's checks decide what
    # is acceptable (see CUSTOMER_CHECKS), and refuse with validation_failed.
    customer_id: str = Field(min_length=1, max_length=1000, description="e.g. cus_8f3k2m9q")


class RunQueryParams(_Params):
    expression: str = Field(
        min_length=1,
        max_length=2000,
        description="Arithmetic/aggregate expression over invoice fields, "
        "e.g. 'sum(amount) / count()'",
    )


CUSTOMER_CHECKS = (ParamCheck("customer_id", pattern=r"cus_[A-Za-z0-9]{8,32}", max_length=40),)
QUERY_CHECKS = (
    ParamCheck(
        "expression",
        max_length=300,
        ast=AstRule(functions=frozenset({"sum", "count", "avg", "min", "max"}),
                    names=frozenset({"amount"})),
    ),
)  # fmt: skip


class SendPaymentParams(_Params):
    to_account: str = Field(pattern=r"^acct_[A-Za-z0-9]{6,32}$", description="e.g. acct_4f9d2a")
    amount: Amount
    currency: Currency


TARGET = "payments"

TOOLS = [
    Tool(
        name="payments.get_exchange_rate",
        description="Current exchange rate between two currencies.",
        params=ExchangeRateParams,
        tier=Tier.PUBLIC,
        target=TARGET,
        operation=HttpOperation("GET", "/v1/rates", query=("base", "quote")),
    ),
    Tool(
        name="payments.list_invoices",
        description="List invoices, optionally by status.",
        params=ListInvoicesParams,
        tier=Tier.INTERNAL,
        target=TARGET,
        operation=HttpOperation("GET", "/v1/invoices", query=("status", "limit")),
    ),
    Tool(
        name="payments.create_invoice",
        description="Create an invoice for a customer.",
        params=CreateInvoiceParams,
        tier=Tier.INTERNAL,
        target=TARGET,
        operation=HttpOperation(
            "POST",
            "/v1/invoices",
            body=("customer_id", "amount", "currency", "memo"),
            idempotency_key=True,
        ),
        effect=("customer_id", "amount", "currency"),
    ),
    Tool(
        name="customers.get_customer",
        description="Read a customer record (contact and payment details are masked).",
        params=GetCustomerParams,
        tier=Tier.CONFIDENTIAL,
        target=TARGET,
        operation=HttpOperation("GET", "/v1/customers/{customer_id}"),
        checks=CUSTOMER_CHECKS,
        mask={"email": "email", "card_number": "last4", "national_id": "full"},
    ),
    Tool(
        name="reports.run_query",
        description="Evaluate an aggregate expression over invoices, "
        "e.g. 'sum(amount) / count()'. Functions: sum, count, avg, min, max.",
        params=RunQueryParams,
        tier=Tier.CONFIDENTIAL,
        target=TARGET,
        operation=HttpOperation("POST", "/v1/reports/query", body=("expression",)),
        checks=QUERY_CHECKS,
    ),
    Tool(
        name="payments.send_payment",
        description="Send money to an account. Needs approval.",
        params=SendPaymentParams,
        tier=Tier.RESTRICTED,
        target=TARGET,
        operation=HttpOperation(
            "POST", "/v1/payments", body=("to_account", "amount", "currency"), idempotency_key=True
        ),
        effect=("to_account", "amount", "currency"),
    ),
]
