"""The layout holds its shape: layers import downward only, modules and functions stay small.

Layers, bottom up: ``shared``; ``client`` (shared only); in ``services``:
``core`` (what a tool call is), ``store`` (Redis), ``runtime`` (endpoint,
builder, audit emitter, run loop), one folder per worker kind (never importing
another worker's folder), and ``dev`` (dev stack, demo, CLI) on top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = {"authorize", "execute", "approval", "audit", "executor", "gateway"}
#: What each part may import from the project (besides itself).
ALLOWED = {
    "shared": set(),
    "client": {"shared"},
    "core": {"shared"},
    "store": {"shared"},
    # Cedar policy: the schema from the tool catalog, decisions, the TOML converter.
    "policy": {"shared", "core"},
    # Tool catalogs (tools as data) load into core's tool objects.
    "catalog": {"shared", "core"},
    "runtime": {"shared", "core", "store", "policy", "catalog"},
    **{w: {"shared", "core", "store", "runtime", "policy", "catalog"} for w in WORKERS},
    # The gateway's /mcp serves the MCP server's tools, names and results (client's
    # mcp_server) as the request's own user: it is a client of the bus, like any agent.
    "gateway": {"shared", "client", "core", "store", "runtime", "policy", "catalog"},
    "dev": {"shared", "client", "core", "store", "runtime", "policy", "catalog", *WORKERS},
    # The web console sits on top: it reuses the CLI's status and audit readers.
    "console": {
        "shared",
        "client",
        "core",
        "store",
        "runtime",
        "policy",
        "catalog",
        "audit",
        "dev",
    },
}
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _part(module: str) -> str:
    """``mcp_handshake.services.core.tools`` -> ``core``; ``mcp_handshake.client`` -> ``client``."""
    parts = module.split(".")
    return parts[2] if parts[1] == "services" and len(parts) > 2 else parts[1]


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("shared", "client", "services"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT / top).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mcp_handshake")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module and node.module.startswith("mcp_handshake"):
                out.add(node.module)
    return out


def test_layers_import_downward_only() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        own = _part(module)
        for target in _imports(module, path):
            other = _part(target)
            if other != own and other not in ALLOWED[own]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for target in _imports(module, path):
            while target and target not in modules:  # `from pkg import name`
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack, node]))
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, [*stack, node])
        done.add(node)

    for module in modules:
        visit(module, [])


def test_services_modules_and_functions_stay_small() -> None:
    big = []
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{path.name}:{node.name}: {length} lines")
    assert not big, big


def test_the_checks_can_fail() -> None:
    """The layer rule refuses a sideways import between workers."""
    assert "authorize" not in ALLOWED["execute"]
    assert _part("mcp_handshake.services.approval.handler") == "approval"
    assert _part("mcp_handshake.client") == "client"
