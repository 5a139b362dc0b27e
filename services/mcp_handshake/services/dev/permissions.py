"""The permission model on the bus: one template for every NATS identity.

Every process and every agent connects as its own NATS user, and each user
may subscribe only under its own inbox prefix (``_INBOX.<user>.``), so no one
reads another's replies. Workers of one kind share a user named after the
kind; each agent has a user of its own. What each may do:

- agents publish only to the agent subjects (``handshake.v1.*``) and
  subscribe only to their inbox;
- only worker users join worker queue groups, and only the execute user
  publishes to executor subjects;
- the HTTP gateway publishes only the agent subjects it serves (authorize,
  execute, reconcile, tools, status, keys, approvals list and decide, and the
  authorize and execute batches, each with the caller's own session), joins no
  queue group and emits no audit;
- each worker kind publishes audit events only under
  ``handshake.audit.<kind>.``, and uses the JetStream API only for its own
  streams and consumers;
- stream management belongs to the audit user and the operator; no worker
  may delete or purge a stream;
- the operator may run ``status`` (``$SRV``) and ``audit tail``, is the only
  one who may tell a halted audit writer to resume (``audit resume``), and
  writes the key registry (KV ``HANDSHAKE_KEYS``), which execute workers read;
- the console user (``worker console``) publishes only to the approvals subjects (for
  the signed-in approver, with their session), the receipt keys, discovery and the
  audit stream's info (``status``);
- only the audit user publishes signed checkpoints to ``HANDSHAKE_CHECKPOINTS``
  (a stream that refuses deletes and purges, even the operator's);
- authorize workers write, and approval workers read and prune, the pending
  approvals' durable copy (KV ``HANDSHAKE_PENDING``); each creates its bucket
  when missing, with the stream API of exactly that bucket.

:func:`render` turns the model into a ``nats-server`` configuration: the one
``deploy/nats/nats.conf`` ships (passwords from the environment) and the one
the dev stack runs (bcrypt hashes of generated passwords) come from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mcp_handshake.services.audit.names import CHECKPOINT_STREAM as CHECKPOINTS
from mcp_handshake.services.audit.names import CHECKPOINT_SUBJECT, RESUME
from mcp_handshake.services.runtime.approvals import DURABLE
from mcp_handshake.services.runtime.approvals import STREAM as APPROVALS
from mcp_handshake.services.runtime.audit import STREAM as AUDIT
from mcp_handshake.services.store.keys import KEYS_BUCKET
from mcp_handshake.services.store.pending import PENDING_BUCKET
from mcp_handshake.shared.natsconn import inbox_prefix
from mcp_handshake.shared.subjects import AUDIT_PREFIX, Subjects

__all__ = ["CONSOLE", "OPERATOR", "ROLES", "WORKER_KINDS", "Identity", "permissions", "render"]

WORKER_KINDS = ("authorize", "execute", "approval", "audit", "executor", "gateway")
OPERATOR = "operator"
#: The web console's identity: it acts for signed-in users with their own sessions.
CONSOLE = "console"
ROLES = (*WORKER_KINDS, OPERATOR, CONSOLE, "agent")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JS = "$JS.API"


@dataclass(frozen=True, slots=True)
class Identity:
    """A NATS user: its name, its role, and how its password appears in the config."""

    name: str
    role: str
    #: A bcrypt hash of the password, or with ``from_env`` the name of the environment
    #: variable nats-server reads the password from.
    password: str
    from_env: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError("identity names are 1-64 letters, digits, '-' or '_'")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")


def _stream_api(stream: str, *verbs: str) -> list[str]:
    return [f"{_JS}.STREAM.{verb}.{stream}" for verb in verbs]


def _kv_api(bucket: str, *verbs: str) -> list[str]:
    """The stream API for exactly one key-value bucket (its stream is ``KV_<bucket>``)."""
    return _stream_api(f"KV_{bucket}", *verbs)


def _consumer_api(stream: str, consumer: str, *verbs: str) -> list[str]:
    out = []
    for verb in verbs:
        out += [
            f"{_JS}.CONSUMER.{verb}.{stream}.{consumer}",
            f"{_JS}.CONSUMER.{verb}.{stream}.{consumer}.>",
        ]
    return out


def permissions(identity: Identity, subjects: Subjects) -> dict[str, object]:
    """The publish/subscribe permissions of one identity."""
    s, role = subjects, identity.role
    inbox = f"{inbox_prefix(identity.name)}.>"
    audit_events = f"{AUDIT_PREFIX}.{role}.>"
    discovery = "$SRV.>"
    if role == "agent":
        pub = [s.authorize, s.execute, s.tools, s.status, s.keys, s.approvals_list,
               s.approvals_decide, s.reconcile, s.authorize_batch, s.execute_batch]  # fmt: skip
        return {"publish": {"allow": pub}, "subscribe": {"allow": [inbox]}}
    if role == OPERATOR:
        pub = [f"{_JS}.>", "$JS.ACK.>", "$JS.FC.>", discovery, RESUME, f"$KV.{KEYS_BUCKET}.>"]
        return {"publish": {"allow": pub}, "subscribe": {"allow": [inbox]}}
    if role == CONSOLE:
        pub = [s.approvals_list, s.approvals_decide, s.keys, discovery,
               *_stream_api(AUDIT, "INFO")]  # fmt: skip
        return {"publish": {"allow": pub}, "subscribe": {"allow": [inbox]}}
    by_role: dict[str, tuple[list[str], list[str]]] = {
        "authorize": (
            [s.authorize, s.tools, s.authorize_batch],
            [audit_events, s.approval_requests, *_stream_api(AUDIT, "INFO"),
             *_stream_api(APPROVALS, "INFO"), *_kv_api(PENDING_BUCKET, "INFO", "CREATE"),
             f"$KV.{PENDING_BUCKET}.>"],
        ),
        "execute": (
            [s.execute, s.keys, s.reconcile, s.execute_batch],
            [s.executor("*"), s.executor_batch("*"), audit_events, *_stream_api(AUDIT, "INFO"),
             *_kv_api(KEYS_BUCKET, "INFO", "CREATE", "MSG.GET")],
        ),
        # Executors audit one event of their own: catalog.drift (a pinned tool changed).
        "executor": ([s.executor("*"), s.executor_batch("*")],
                     [audit_events, *_stream_api(AUDIT, "INFO")]),
        # The HTTP gateway: an agent-facing proxy, it only asks (no queue group, no audit).
        "gateway": ([], [s.authorize, s.execute, s.tools, s.status, s.keys, s.reconcile,
                         s.approvals_list, s.approvals_decide, s.authorize_batch,
                         s.execute_batch]),
        "approval": (
            [s.status, f"{s.prefix}.approvals.>", s.approval_decided("*")],
            [audit_events, s.approval_decided("*"), *_stream_api(AUDIT, "INFO"),
             *_stream_api(APPROVALS, "INFO"),
             *_consumer_api(APPROVALS, DURABLE, "INFO", "CREATE", "DURABLE.CREATE", "MSG.NEXT"),
             f"$JS.ACK.{APPROVALS}.{DURABLE}.>",
             *_kv_api(PENDING_BUCKET, "INFO", "CREATE", "MSG.GET"), f"$KV.{PENDING_BUCKET}.>",
             *_kv_api(KEYS_BUCKET, "INFO", "MSG.GET")],  # signed decisions by registered keys
        ),
        "audit": (
            [RESUME],
            [f"{_JS}.INFO", *_stream_api(AUDIT, "INFO", "CREATE", "UPDATE"),
             *_stream_api(CHECKPOINTS, "INFO", "CREATE", "UPDATE", "MSG.GET"),
             CHECKPOINT_SUBJECT,
             *_stream_api(APPROVALS, "INFO", "CREATE", "UPDATE"),
             f"{_JS}.CONSUMER.CREATE.{AUDIT}", f"{_JS}.CONSUMER.CREATE.{AUDIT}.>",
             f"{_JS}.CONSUMER.DELETE.{AUDIT}.>", f"{_JS}.CONSUMER.INFO.{AUDIT}.>",
             f"$JS.FC.{AUDIT}.>", f"$JS.ACK.{AUDIT}.>"],
        ),
    }  # fmt: skip
    sub, pub = by_role[role]
    return {"publish": {"allow": pub} if pub else {"deny": [">"]},
            "subscribe": {"allow": [*sub, discovery, inbox]}, "allow_responses": True}  # fmt: skip


def _permissions(perms: Mapping[str, object]) -> str:
    lines = []
    for key, value in perms.items():
        if isinstance(value, dict):
            rules = " ".join(f"{k}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"          {key}: {{ {rules} }}\n")
        else:
            lines.append(f"          {key}: {json.dumps(value)}\n")
    return "".join(lines)


def _quote(value: object) -> str:
    return json.dumps(value)


def render(
    identities: Iterable[Identity],
    subjects: Subjects,
    *,
    listen: str,
    store_dir: str,
    extra: Mapping[str, str] | None = None,
) -> str:
    """A complete nats-server configuration: JetStream on, one account, these users."""
    users = []
    for ident in identities:
        # Single quotes: nats-server reads them raw (a bcrypt hash holds '$').
        password = f"${ident.password}" if ident.from_env else f"'{ident.password}'"
        users.append(f"      {{ user: {_quote(ident.name)}, password: {password},\n"
                     f"        permissions: {{\n{_permissions(permissions(ident, subjects))}"
                     f"        }} }}")  # fmt: skip
    lines = [
        "# Generated by `mcp-handshake nats-config` from the permission model",
        "# (mcp_handshake.services.dev.permissions); the dev stack runs the same model.",
        f"listen: {listen}",
        "max_payload: 1MB",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
        f"jetstream {{\n  store_dir: {_quote(store_dir)}\n}}",
        "accounts {",
        "  HANDSHAKE {",
        "    jetstream: enabled",
        "    users = [",
        *users,
        "    ]",
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)
