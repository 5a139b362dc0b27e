"""The demo target: a small payments API over HTTP that demands an API key.

It stands for the sensitive backend the mediator protects. It honours
``Idempotency-Key`` (a repeated key returns the first answer and changes
nothing) and counts its side effects, so tests can prove exactly-once
execution; it keeps the last ``traceparent`` headers it received, so tests
can see what trace context reaches it. Run it with
``python -m mcp_handshake.services.dev.demo.target``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hmac
import itertools
import json
import operator
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["create_app"]

#: How many received ``traceparent`` headers the target keeps for ``/_stats``.
_KEPT = 200

_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.2, "CHF": 0.88, "CAD": 1.36}

_CUSTOMERS = {
    "cus_8f3k2m9q": {
        "id": "cus_8f3k2m9q",
        "name": "Jane Doe",
        "email": "jane.doe@example.com",
        "card_number": "4242424242424242",
        "national_id": "123-45-6789",
        "country": "US",
    },
    "cus_a1b2c3d4": {
        "id": "cus_a1b2c3d4",
        "name": "Max Mustermann",
        "email": "max@example.de",
        "card_number": "5555555555554444",
        "national_id": "T22000129",
        "country": "DE",
    },
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class _Ledger:
    def __init__(self) -> None:
        self.invoices: list[dict[str, Any]] = [
            {"id": "inv_0001", "customer_id": "cus_8f3k2m9q", "amount": 120.0,
             "currency": "USD", "status": "paid", "memo": None},
            {"id": "inv_0002", "customer_id": "cus_a1b2c3d4", "amount": 80.5,
             "currency": "EUR", "status": "open", "memo": "consulting"},
        ]  # fmt: skip
        self.payments: list[dict[str, Any]] = []
        self.idempotent: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.side_effects = 0
        self.traceparents: deque[str] = deque(maxlen=_KEPT)
        self._ids = itertools.count(3)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"


_AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda xs: float(sum(xs)),
    "count": lambda xs: float(len(xs)),
    "avg": lambda xs: float(sum(xs)) / len(xs) if xs else 0.0,
    "min": lambda xs: min(xs) if xs else 0.0,
    "max": lambda xs: max(xs) if xs else 0.0,
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}  # fmt: skip


def _evaluate(expr: str, invoices: list[dict[str, Any]]) -> float:
    """The target's own evaluator: aggregates over invoice fields, nothing else."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return float(_BINOPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fn = _AGGREGATES.get(node.func.id)
            if fn is None or node.keywords or len(node.args) > 1:
                raise ValueError("unsupported function")
            if not node.args:
                return fn([1.0 for _ in invoices]) if node.func.id == "count" else 0.0
            field = node.args[0]
            if not isinstance(field, ast.Name) or field.id not in {"amount"}:
                raise ValueError("unsupported field")
            return float(fn([inv[field.id] for inv in invoices]))
        raise ValueError("unsupported expression")

    return ev(ast.parse(expr, mode="eval"))


class _Api:
    """The handlers, over one in-memory ledger."""

    def __init__(self, api_key: str) -> None:
        self.ledger = _Ledger()
        self._expected = api_key.encode()

    def guard(self, handler: Any, counted: bool = True) -> Any:
        """API key check, call counting and Idempotency-Key replay for POSTs."""
        ledger = self.ledger

        async def wrapped(request: Request) -> JSONResponse:
            given = request.headers.get("x-api-key", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return _error(401, "unauthorized", "missing or wrong API key")
            if counted:
                ledger.calls[handler.__name__] += 1
                ledger.traceparents.extend(request.headers.getlist("traceparent"))
            key = request.headers.get("idempotency-key")
            if request.method == "POST" and key and key in ledger.idempotent:
                return JSONResponse(ledger.idempotent[key])
            response: JSONResponse = await handler(request)
            if request.method == "POST" and key and response.status_code < 300:
                ledger.idempotent[key] = json.loads(bytes(response.body))
            # For fault tests: the effect is done (and its key recorded), the answer late.
            delay = request.query_params.get("delay_s", "")
            if delay.replace(".", "", 1).isdigit():
                await asyncio.sleep(min(float(delay), 30.0))
            return response

        return wrapped

    async def rates(self, request: Request) -> JSONResponse:
        base, quote = request.query_params.get("base"), request.query_params.get("quote")
        if base not in _RATES or quote not in _RATES:
            return _error(404, "unknown_currency", "unknown currency")
        rate = round(_RATES[quote] / _RATES[base], 6)
        return JSONResponse({"base": base, "quote": quote, "rate": rate})

    async def list_invoices(self, request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        limit = int(request.query_params.get("limit", "20"))
        rows = [i for i in self.ledger.invoices if status in (None, i["status"])]
        return JSONResponse({"invoices": rows[:limit], "total": len(rows)})

    async def create_invoice(self, request: Request) -> JSONResponse:
        body = await request.json()
        invoice = {"id": self.ledger.next_id("inv"), "status": "open", "memo": None, **body}
        self.ledger.invoices.append(invoice)
        self.ledger.side_effects += 1
        return JSONResponse(invoice, status_code=201)

    async def get_customer(self, request: Request) -> JSONResponse:
        customer = _CUSTOMERS.get(request.path_params["customer_id"])
        if customer is None:
            return _error(404, "customer_not_found", "no such customer")
        return JSONResponse(customer)

    async def run_query(self, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            value = _evaluate(str(body.get("expression", "")), self.ledger.invoices)
        except (ValueError, SyntaxError, ZeroDivisionError):
            return _error(400, "bad_expression", "expression not supported")
        return JSONResponse({"value": value, "rows": len(self.ledger.invoices)})

    async def send_payment(self, request: Request) -> JSONResponse:
        body = await request.json()
        payment = {"id": self.ledger.next_id("pay"), "status": "sent", **body}
        self.ledger.payments.append(payment)
        self.ledger.side_effects += 1
        return JSONResponse(payment, status_code=201)

    async def stats(self, request: Request) -> JSONResponse:
        ledger = self.ledger
        body: dict[str, Any] = {"side_effects": ledger.side_effects, "calls": dict(ledger.calls),
                                "traceparents": list(ledger.traceparents)}  # fmt: skip
        if request.query_params.get("payments"):  # payments made per account (drills)
            body["payments_to"] = Counter(str(p.get("to_account")) for p in ledger.payments)
        return JSONResponse(body)


def create_app(api_key: str) -> Starlette:
    api = _Api(api_key)
    g = api.guard
    routes = [
        Route("/v1/rates", g(api.rates), methods=["GET"]),
        Route("/v1/invoices", g(api.list_invoices), methods=["GET"]),
        Route("/v1/invoices", g(api.create_invoice), methods=["POST"]),
        Route("/v1/customers/{customer_id}", g(api.get_customer), methods=["GET"]),
        Route("/v1/reports/query", g(api.run_query), methods=["POST"]),
        Route("/v1/payments", g(api.send_payment), methods=["POST"]),
        Route("/_stats", g(api.stats, counted=False), methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Demo payments API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--api-key-file", type=Path, required=True)
    args = parser.parse_args()
    app = create_app(args.api_key_file.read_text().strip())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
