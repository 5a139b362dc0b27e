"""A raw JSON-RPC MCP server over stdio, for answers the SDK's own server would refuse
to send: ``python -m tests.support.raw_mcp``.

- ``badout`` declares an ``outputSchema`` (``count`` an integer) and answers
  ``structuredContent`` ``{"count": "many"}``;
- ``big`` answers about 10 MB of text;
- ``ok`` answers ``{"count": 1}``, matching its schema.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SCHEMA = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
NO_PARAMS = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "badout", "description": "Breaks its output schema.", "inputSchema": NO_PARAMS,
     "outputSchema": SCHEMA},
    {"name": "big", "description": "Answers 10 MB.", "inputSchema": NO_PARAMS},
    {"name": "ok", "description": "Keeps its output schema.", "inputSchema": NO_PARAMS,
     "outputSchema": SCHEMA},
]  # fmt: skip


def answer(method: str, params: dict[str, Any]) -> Any:
    if method == "initialize":
        info = {"name": "raw", "version": "1"}
        version = params.get("protocolVersion", "2025-06-18")
        return {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        name = params["name"]
        if name == "big":
            return {"content": [{"type": "text", "text": "x" * (10 * 1024 * 1024)}]}
        value = {"count": "many"} if name == "badout" else {"count": 1}
        return {"content": [{"type": "text", "text": json.dumps(value)}],
                "structuredContent": value}  # fmt: skip
    return {}


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue  # a notification, or an answer to us
        result = answer(msg["method"], msg.get("params") or {})
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
