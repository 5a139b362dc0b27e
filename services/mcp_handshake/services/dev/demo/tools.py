"""Demo tools over the demo payments API: one catalog, ``payments.catalog.yaml``.

No tool here needs Python: the tools are data, and this module only loads them, so
``[tools] modules`` in handshake.toml keeps naming the demo's tools the way it did.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mcp_handshake.services.catalog import load_catalog

CATALOG = Path(str(resources.files(__package__).joinpath("payments.catalog.yaml")))
#: Largest amount the demo's amount params accept.
AMOUNT_MAX = 1_000_000_000

TOOLS = list(load_catalog(CATALOG).tools)
