"""The dispatches of an execute batch: one signed message per target, not one each.

Every operation of a batch runs :func:`~.handler.send_dispatch` as it would
alone, but over a stand-in NATS connection (:meth:`DispatchRound.member`) and
an unsigned dispatcher: its request is held until every operation has either
dispatched or finished without a dispatch; then the held dispatches go to each
target's executors as one message, ``{"items": [<dispatch>, ...]}``, signed
once (detached JWS, ``typ: handshake-dispatch-batch+jws``) over its exact
bytes. The executor's reply carries one result per item, which each operation
reads as the reply to its own dispatch. A missing answer or no responders is
each operation's own ``outcome_unknown`` or ``unavailable``, as alone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mcp_handshake.services.core.signing import DispatchSigner
from mcp_handshake.shared.batch import RawResults
from mcp_handshake.shared.protocol import DISPATCH_HEADER, ERROR_HEADER
from mcp_handshake.shared.rounds import Round
from mcp_handshake.shared.subjects import Subjects

__all__ = ["DispatchRound", "Unsigned"]

_results = msgspec.json.Decoder(RawResults)
_ERROR_HEADERS = {ERROR_HEADER: "error"}
#: A held dispatch: (single dispatch subject, body bytes, timeout).
Held = tuple[str, bytes, float]


class Unsigned(DispatchSigner):
    """A batch's dispatcher: items are not signed one by one (the message is)."""

    def __init__(self) -> None:  # no key: nothing is signed here
        pass

    def sign(self, body: bytes) -> str:
        return ""


class DispatchRound:
    def __init__(self, nc: NATS, subjects: Subjects, signer: DispatchSigner, size: int) -> None:
        self._nc = nc
        self._subjects = subjects
        self._signer = signer
        self.round: Round[Held, Msg | Exception] = Round(size, self._flush)

    def member(self) -> Member:
        return Member(self)

    async def _flush(self, held: list[Held]) -> list[Msg | Exception]:
        by_subject: dict[str, list[int]] = {}
        for i, (subject, _, _) in enumerate(held):
            by_subject.setdefault(subject, []).append(i)
        out: list[Msg | Exception] = [Exception()] * len(held)
        for subject, indices in by_subject.items():  # almost always one target
            replies = await self._send(subject, [held[i] for i in indices])
            for i, reply in zip(indices, replies, strict=True):
                out[i] = reply
        return out

    async def _send(self, subject: str, held: list[Held]) -> list[Msg | Exception]:
        target = subject.removeprefix(self._subjects.executor(""))
        body = b'{"items":[' + b",".join(data for _, data, _ in held) + b"]}"
        try:
            msg = await self._nc.request(
                self._subjects.executor_batch(target), body, timeout=max(t for *_, t in held),
                headers={DISPATCH_HEADER: self._signer.sign(body)},
            )  # fmt: skip
        except (NoRespondersError, NatsTimeout) as exc:
            return [exc] * len(held)
        if msg.headers and ERROR_HEADER in msg.headers:  # the whole message was refused
            return [msg] * len(held)
        try:
            results = _results.decode(msg.data).results
        except msgspec.DecodeError:
            results = []
        if len(results) != len(held):
            return [_reply(b'{"error":{"code":"internal","message":"bad batch reply"}}')] * len(
                held
            )
        return [_reply(bytes(raw)) for raw in results]


def _reply(data: bytes) -> Msg:
    """One item's result as the reply to its own dispatch (error bodies flagged)."""
    headers = _ERROR_HEADERS if data.startswith(b'{"error"') else None
    return Msg(_client=None, data=data, headers=headers)  # type: ignore[arg-type]


class Member(NATS):
    """Stands for the NATS connection of one operation: its request joins the round."""

    def __init__(self, owner: DispatchRound) -> None:  # no super(): it never connects
        self._owner = owner
        self._state = "fresh"

    def leave(self) -> None:
        if self._state == "fresh":
            self._state = "left"
            self._owner.round.leave()

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        if self._state != "fresh":  # one dispatch per operation; never sent twice
            raise RuntimeError("a batch operation dispatched twice")
        self._state = "submitted"
        reply = await self._owner.round.submit((subject, payload, timeout))
        if isinstance(reply, Exception):
            raise reply
        return reply
