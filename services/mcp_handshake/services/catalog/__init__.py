"""Tool catalogs: tools as data (YAML or JSON), imported from OpenAPI specs and MCP servers."""

from mcp_handshake.services.catalog.loader import (
    Catalog,
    CatalogError,
    load_catalog,
    load_catalogs,
)
from mcp_handshake.services.catalog.registry import open_tools

__all__ = ["Catalog", "CatalogError", "load_catalog", "load_catalogs", "open_tools"]
