"""Structured logging: text for people, JSON lines for machines.

Log records carry the transaction id in ``extra={"txn": ...}``; never a
token, session JWT, raw param or target credential.
"""

from __future__ import annotations

import json
import logging
import sys

from mcp_handshake.services.runtime.context import current

__all__ = ["setup_logging"]

_FIELDS = ("txn", "trace_id", "code", "tool", "worker")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s%(ctx)s")

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(
            f"{n}={getattr(record, n)}" for n in _FIELDS if getattr(record, n, None) is not None
        )
        record.ctx = f" [{ctx}]" if ctx else ""
        return super().format(record)


class ContextFilter(logging.Filter):
    """Adds the running request's transaction id and trace id to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current()
        if ctx is not None:
            if getattr(record, "txn", None) is None and ctx.txn:
                record.txn = ctx.txn
            if getattr(record, "trace_id", None) is None and ctx.trace_id:
                record.trace_id = ctx.trace_id
        return True


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' request logs could carry URLs with query params: keep them quiet.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
