"""JetStream streams the workers share: created when missing, never changed once they exist.

An operator may create a stream beforehand, or change it later (more replicas on
a cluster, a longer ``max_age``); workers leave its configuration as it is. They
only read it, and refuse to start when it is unsafe for what they do with it
(:class:`StreamConfigError`, one line naming the setting).
"""

from __future__ import annotations

import asyncio
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

__all__ = ["StartupError", "StreamConfigError", "await_stream", "ensure_stream", "unsafe"]

log = logging.getLogger(__name__)

#: JetStream's "stream name already in use" (another worker created it first).
_NAME_IN_USE = 10058


class StartupError(RuntimeError):
    """A worker cannot start; its message is the one line the process exits with
    (``<error class>: <what and why>``), ``exit_code`` its exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StreamConfigError(StartupError):
    """An existing stream is configured in a way the workers cannot use safely."""


def unsafe(
    existing: StreamConfig,
    wanted: StreamConfig,
    min_duplicate_window: float | None = None,
    min_msg_size: int | None = None,
) -> list[str]:
    """What makes ``existing`` unsafe where ``wanted`` was asked for (empty: safe).

    Replicas, ``max_age``, storage and limits are the operator's choice; retention,
    subjects, a duplicate window the protocol depends on, and a message size limit
    below what the workers send (``min_msg_size``) are not.
    """
    problems = []
    want, got = _value(wanted.retention), _value(existing.retention)
    if want is not None and got != want:
        problems.append(f"retention is {got or '?'}, needs {want}")
    missing = sorted(set(wanted.subjects or ()) - set(existing.subjects or ()))
    if missing:
        problems.append(f"subjects {', '.join(missing)} missing")
    if min_duplicate_window is not None:
        window = existing.duplicate_window or 0.0
        if window < min_duplicate_window:
            problems.append(
                f"duplicate window is {window:.0f} s, needs at least {min_duplicate_window:.0f} s "
                "(the longest transaction lifetime plus a margin)"
            )
    size = existing.max_msg_size
    if min_msg_size is not None and size is not None and 0 < size < min_msg_size:
        problems.append(f"max message size is {size} bytes, needs at least {min_msg_size}")
    return problems


def _value(option: object) -> str | None:
    """An option as its wire string (nats-py gives enums or plain strings)."""
    if option is None:
        return None
    return str(getattr(option, "value", option))


async def ensure_stream(
    js: JetStreamContext,
    config: StreamConfig,
    *,
    min_duplicate_window: float | None = None,
    min_msg_size: int | None = None,
) -> None:
    """Create ``config`` if its stream is missing; otherwise check the existing one
    (see :func:`unsafe`) without changing anything."""
    name = config.name or ""
    for _ in range(2):
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError as exc:
                if exc.err_code == _NAME_IN_USE:
                    continue  # created meanwhile by another worker: check that one
                raise _not_created(config, exc) from None
            except APIError as exc:  # e.g. fewer servers than replicas
                raise _not_created(config, exc) from None
            log.info("created stream %s with %d replica(s)", name, config.num_replicas or 1)
            return
        problems = unsafe(info.config, config, min_duplicate_window, min_msg_size)
        if problems:
            raise StreamConfigError(
                f"failed: stream {name} is unsafe: {'; '.join(problems)}. Fix it (nats stream edit "
                f"{name}) or delete it to have it created; it was not changed"
            )
        if info.config.num_replicas != config.num_replicas or info.config.max_age != config.max_age:
            log.info("stream %s exists (replicas %s, max age %s s): left as configured",
                     name, info.config.num_replicas, info.config.max_age)  # fmt: skip
        return


def _not_created(config: StreamConfig, exc: APIError) -> StreamConfigError:
    return StreamConfigError(
        f"failed: cannot create stream {config.name} with {config.num_replicas or 1} "
        f"replica(s) (HANDSHAKE_STREAM_REPLICAS): {exc.description or exc}"
    )


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
