"""JetStream streams the workers share: created when missing, with the configured settings."""

from __future__ import annotations

import asyncio
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

__all__ = ["await_stream", "ensure_stream"]

log = logging.getLogger(__name__)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


async def await_stream(js: JetStreamContext, name: str, poll_s: float = 0.5) -> None:
    """Wait until ``name`` exists. Streams are created by the audit worker or an
    operator; other workers may not manage streams."""
    waiting = False
    while True:
        try:
            await js.stream_info(name)
            return
        except NotFoundError:
            pass
        except (NatsError, TimeoutError):
            log.debug("stream info failed", exc_info=True)
        if not waiting:
            log.info("waiting for stream %s (created by the audit worker or an operator)", name)
            waiting = True
        await asyncio.sleep(poll_s)
