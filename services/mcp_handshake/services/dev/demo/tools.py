"""Demo tools over the demo payments API, one or more per tier."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from mcp_handshake.services.core.checks import AstRule, ParamCheck
from mcp_handshake.services.core.tools import HttpOperation, Tier, Tool

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
CustomerId = Annotated[
    str, Field(pattern=r"^cus_[A-Za-z0-9]{8,32}$", description="Customer id, e.g. cus_8f3k2m9q")
]
Amount = Annotated[
    Decimal,
    Field(gt=0, le=Decimal("1000000000"), decimal_places=2, description="Amount, > 0"),
    PlainSerializer(float, return_type=float, when_used="json"),
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeRateParams(_Params):
    base: Currency
    quote: Currency


class ListInvoicesParams(_Params):
    status: Literal["open", "paid"] | None = None
    limit: int = Field(20, ge=1, le=100)


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
        preview_mask={"customer_id": "last4"},
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
        preview_mask={"to_account": "last4"},
    ),
]
