"""The ``mcp-handshake`` command line."""

from mcp_handshake.services.dev.cli._app import app, main

__all__ = ["app", "main"]
