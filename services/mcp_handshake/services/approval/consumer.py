"""The approval workers' share of ``HANDSHAKE_APPROVALS``: one durable pull consumer.

Each queued request is handled by one worker; a request published while no
approval worker ran waits in the stream. A request without a valid internal
signature is dropped; one that fails for a backing service is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig

from mcp_handshake.services.approval.audit import agent_audit
from mcp_handshake.services.approval.handler import ApprovalDeps, run_agent
from mcp_handshake.services.core.signing import DispatchVerifier
from mcp_handshake.services.runtime.approvals import DURABLE, STREAM
from mcp_handshake.services.runtime.audit import Audit
from mcp_handshake.shared.errors import HandshakeError
from mcp_handshake.shared.protocol import INTERNAL_HEADER
from mcp_handshake.shared.wire import ApprovalRequest

__all__ = ["consume_approvals"]

log = logging.getLogger(__name__)

_request = msgspec.json.Decoder(ApprovalRequest)


async def _handle(msg: Msg, deps: ApprovalDeps, verifier: DispatchVerifier, audit: Audit) -> None:
    if not verifier.verify((msg.headers or {}).get(INTERNAL_HEADER), msg.data):
        log.warning("dropped an approval request without a valid internal signature")
        await msg.term()
        return
    try:
        request = _request.decode(msg.data)
    except msgspec.DecodeError:
        await msg.term()
        return
    try:
        agent_audit(audit, await run_agent(request.txn, deps))
    except HandshakeError:
        # e.g. Redis unavailable: try again shortly, nothing is lost
        await msg.nak(delay=1.0)
        return
    await msg.ack()


async def consume_approvals(
    nc: NATS, deps: ApprovalDeps, verifier: DispatchVerifier, audit: Audit
) -> None:
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=1000)
    while True:
        try:
            psub = await js.pull_subscribe(
                deps.subjects.approval_requests, durable=DURABLE, stream=STREAM, config=config
            )
            break
        except (NatsError, TimeoutError):
            await asyncio.sleep(0.5)
    try:
        while True:
            try:
                msgs = await psub.fetch(batch=32, timeout=1.0)
            except TimeoutError:
                continue
            except NatsError:
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(_handle(m, deps, verifier, audit) for m in msgs))
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
