"""Several nats-server nodes on loopback as one cluster, JetStream replicated across them.

Each node runs the permission model the dev stack runs (the same users, the same
subject permissions); only the listen address, the server name, the JetStream
directory and the ``cluster`` block differ. The dev stack starts one with
``StackSpec(nats_nodes=3)``; ``make test-cluster`` runs the suites and the failure
drills against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mcp_handshake.services.dev.identities import Identities
from mcp_handshake.services.dev.permissions import render
from mcp_handshake.services.dev.procs import free_port
from mcp_handshake.shared.settings import write_private
from mcp_handshake.shared.subjects import Subjects

__all__ = ["CLUSTER_NAME", "NatsNode", "is_nats_process", "node_configs"]

CLUSTER_NAME = "handshake"


@dataclass(frozen=True)
class NatsNode:
    """One node: its index (server name ``nats-<index>``), client and route ports."""

    index: int
    client: int = field(default_factory=free_port)
    route: int = field(default_factory=free_port)

    @property
    def name(self) -> str:
        return f"nats-{self.index}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"


def node_configs(identities: Identities, nodes: list[NatsNode], subjects: Subjects) -> list[Path]:
    """Write one configuration per node (0600) under the identities' folder; their paths."""
    routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{n.route}") for n in nodes)
    paths = []
    for node in nodes:
        cluster = (f'{{ name: {CLUSTER_NAME}, listen: "127.0.0.1:{node.route}", '
                   f"routes: [{routes}] }}")  # fmt: skip
        text = render(
            identities.all(),
            subjects,
            listen=f"127.0.0.1:{node.client}",
            store_dir=str(identities.root / f"jetstream-{node.index}"),
            extra={"server_name": node.name, "cluster": cluster},
        )
        path = identities.root / f"{node.name}.conf"
        write_private(path, text)
        paths.append(path)
    return paths


def is_nats_process(name: str) -> bool:
    """A dev stack's nats-server process: ``nats-server``, or a cluster's ``nats-<i>``."""
    return name == "nats-server" or (name.startswith("nats-") and name[5:].isdigit())
