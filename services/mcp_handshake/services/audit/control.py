"""``audit resume``: an operator's explicit acceptance of a gap, over the bus.

The request goes to :data:`RESUME`, which only the ``operator`` NATS user may
publish to and only the audit user may subscribe to. Every audit worker
listens; only the one holding the log answers (standbys stay silent). The
acceptance is written to the log as a signed ``accept`` record naming who
accepted it, when, why, and the stream identity and sequence writing resumes
from.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from mcp_handshake.services.audit.continuity import available_from, identity, same_stream
from mcp_handshake.services.audit.follow import WriterState
from mcp_handshake.services.audit.log import AuditLogWriter
from mcp_handshake.services.audit.names import RESUME
from mcp_handshake.services.runtime.audit import STREAM

__all__ = ["RESUME", "listen"]

log = logging.getLogger(__name__)


async def _resume(nc: NATS, writer: AuditLogWriter, state: WriterState,
                  request: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    gap = writer.gap
    if gap is None:
        return {"ok": False, "error": "the audit writer is not halted; nothing to accept"}
    if request.get("accept_gap") is not True:
        return {"ok": False, "error": "resuming needs accept_gap: true", "gap": gap}
    by, note = str(request.get("by") or "")[:200], str(request.get("note") or "")[:1000]
    if not by:
        return {"ok": False, "error": "say who accepts the gap (by)", "gap": gap}
    try:
        info = await nc.jetstream().stream_info(STREAM)
    except NotFoundError:
        return {"ok": False, "error": f"stream {STREAM} does not exist yet", "gap": gap}
    now = identity(info)
    # Within the stream the gap was found in, resume where it said the stream goes on.
    resume = int(gap["next"]) if same_stream(gap["found"], now) else available_from(info)
    claims = writer.accept(f"{by} (nats user operator)", note, now, resume)
    state.resumed.set()
    log.warning("audit gap accepted by %s; writing resumes at stream sequence %d", by, resume)
    return {"ok": True, "gap": gap, "accepted": claims}


async def listen(nc: NATS, writer: AuditLogWriter, state: WriterState) -> Subscription:
    async def on_request(msg: Msg) -> None:
        if state.role == "standby":
            return  # the writer answers
        try:
            request = json.loads(msg.data or b"{}")
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            await msg.respond(json.dumps({"ok": False, "error": "bad request"}).encode())
            return
        reply = await _resume(nc, writer, state, request)
        await msg.respond(json.dumps(reply).encode())

    return await nc.subscribe(RESUME, cb=on_request)
