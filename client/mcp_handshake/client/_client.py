"""``HandshakeClient``: both phases of the handshake, receipts verified."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mcp_handshake.shared.errors import (
    HandshakeError,
    InvalidTransaction,
    OutcomeUnknown,
    Unavailable,
    ValidationFailed,
    error_from_wire,
)
from mcp_handshake.shared.hashing import canonical_json, sha256_tagged
from mcp_handshake.shared.subjects import DEFAULT_PREFIX, Subjects
from mcp_handshake.shared.wire import ErrorReply, ExecuteReply, Grant, Jwks, ToolInfo, ToolsReply

from ._session import SessionProvider, as_provider

__all__ = ["CallResult", "HandshakeClient"]

_ERROR_HEADER = "Nats-Service-Error"
_RECEIPT_TYP = "handshake-receipt+jwt"
_encode = msgspec.json.encode
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (Grant, ExecuteReply, ToolsReply, Jwks, ErrorReply)
}


@dataclass(frozen=True, slots=True)
class CallResult:
    """The outcome of one handshake: the result and its verified receipt."""

    transaction_id: str
    result: Any
    receipt: str
    #: The receipt's verified claims (who, what, when, approvals).
    claims: dict[str, Any]


class HandshakeClient:
    """Talks to the mediator over NATS request-reply.

    ```python
    async with HandshakeClient("nats://127.0.0.1:4222", session=token) as hs:
        res = await hs.call("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    ```
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        session: Any = None,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 15.0,
        verify_receipts: bool = True,
        nc: NATS | None = None,
    ) -> None:
        self._servers = [servers] if isinstance(servers, str) else servers
        self._session: SessionProvider = as_provider(session)
        self._subjects = Subjects(prefix)
        self._timeout = timeout_s
        self._verify_receipts = verify_receipts
        self._nc = nc
        self._own_nc = nc is None
        self._keys: dict[str, jwt.PyJWK] = {}

    async def __aenter__(self) -> HandshakeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is None:
            self._nc = await nats.connect(servers=self._servers, name="handshake-client")

    async def close(self) -> None:
        if self._nc is not None and self._own_nc:
            await self._nc.drain()
        self._nc = None

    async def _request(
        self,
        subject: str,
        body: Any,
        reply_type: type[Any],
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
        timeout_error: type[HandshakeError] = Unavailable,
    ) -> Any:
        if self._nc is None:
            raise RuntimeError("HandshakeClient is not connected (use 'async with')")
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = f"Bearer {await self._session.token()}"
        try:
            msg = await self._nc.request(
                subject, _encode(body), timeout=self._timeout, headers=hdrs
            )
        except NoRespondersError:
            raise Unavailable("no mediator worker is serving this request") from None
        except NatsTimeout:
            raise timeout_error("the mediator did not answer in time") from None
        if msg.headers and _ERROR_HEADER in msg.headers:
            detail = _decoders[ErrorReply].decode(msg.data).error
            raise error_from_wire(
                detail.code, detail.message, detail.transaction_id, detail.retry_after_s
            )
        return _decoders[reply_type].decode(msg.data)

    async def tools(self) -> list[ToolInfo]:
        """The tools this caller may use, with their params JSON Schemas."""
        reply: ToolsReply = await self._request(self._subjects.tools, {}, ToolsReply)
        return reply.tools

    async def authorize(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> Grant:
        """Phase 1: a single-use token for exactly this operation."""
        body: dict[str, Any] = {"tool": tool, "params": params}
        if context:
            body["context"] = context
        grant: Grant = await self._request(self._subjects.authorize, body, Grant)
        return grant

    async def execute(self, grant: Grant, tool: str, params: dict[str, Any]) -> CallResult:
        """Phase 2: run the operation the grant is for; verify the receipt."""
        headers = {"Handshake-Transaction-Token": grant.token}
        body = {"transaction_id": grant.transaction_id, "tool": tool, "params": params}
        reply: ExecuteReply = await self._request(
            self._subjects.execute, body, ExecuteReply, headers, timeout_error=OutcomeUnknown
        )
        claims = await self.verify_receipt(reply.receipt, reply.result, grant, tool)
        return CallResult(reply.transaction_id, reply.result, reply.receipt, claims)

    async def call(
        self, tool: str, params: dict[str, Any], context: dict[str, Any] | None = None
    ) -> CallResult:
        """Both phases of the handshake for one operation."""
        grant = await self.authorize(tool, params, context)
        return await self.execute(grant, tool, params)

    async def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        """The mediator's receipt-signing keys (JWKS from ``handshake.v1.keys``)."""
        if refresh or not self._keys:
            jwks: Jwks = await self._request(self._subjects.keys, {}, Jwks, auth=False)
            self._keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.keys if "kid" in k}
        return self._keys

    async def verify_receipt(
        self, receipt: str, result: Any, grant: Grant, tool: str
    ) -> dict[str, Any]:
        """Check the receipt's signature and that it covers this transaction and result."""
        if not self._verify_receipts:
            return dict(jwt.decode(receipt, options={"verify_signature": False}))
        keys = await self.keys()
        try:
            if len(keys) == 1:
                # One key: decode once with it (header parsing is costly in PyJWT)
                ((kid, key),) = keys.items()
            else:
                kid = jwt.get_unverified_header(receipt).get("kid", "")
                if kid not in keys:
                    keys = await self.keys(refresh=True)
                key = keys.get(kid)  # type: ignore[assignment]
                if key is None:
                    raise ValidationFailed("receipt signed by an unknown key")
            decoded = jwt.api_jwt.decode_complete(
                receipt,
                key.key,
                algorithms=[key.algorithm_name],
                options={"require": ["iss", "sub", "txn", "tool", "ph", "rh", "iat"]},
                leeway=60,
            )
        except jwt.PyJWTError:
            raise ValidationFailed("receipt signature does not verify") from None
        header = decoded["header"]
        if header.get("typ") != _RECEIPT_TYP or header.get("kid") != kid:
            raise ValidationFailed("receipt header is not a handshake receipt's")
        claims: dict[str, Any] = decoded["payload"]
        expected = {
            "txn": grant.transaction_id,
            "tool": tool,
            "ph": grant.params_hash,
            "rh": sha256_tagged(canonical_json(result)),
        }
        for name, value in expected.items():
            if claims.get(name) != value:
                raise InvalidTransaction(f"receipt does not match this transaction ({name})")
        if claims["iat"] > time.time() + 60:
            raise ValidationFailed("receipt issued in the future")
        return claims
