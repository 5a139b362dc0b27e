"""A plain, unauthenticated FastMCP HTTP tool server: the baseline a handshake should beat."""

from __future__ import annotations

import sys

from fastmcp import FastMCP

mcp = FastMCP("baseline")


@mcp.tool
def get_exchange_rate(base: str, quote: str) -> dict[str, object]:
    """Exchange rate between two currencies."""
    return {"base": base, "quote": quote, "rate": 1.086957}


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False)
