"""The mcp-handshake client: ask the mediator to run sensitive operations for an agent.

```python
from mcp_handshake.client import HandshakeClient

async with HandshakeClient("nats://127.0.0.1:4222", session=jwt) as hs:
    print(await hs.tools())
    res = await hs.call("payments.get_exchange_rate", {"base": "EUR", "quote": "USD"})
    print(res.result, res.claims["txn"])
```

Errors are the classes of :mod:`mcp_handshake.shared.errors`, one per protocol
error code, all subclasses of ``HandshakeError``.
"""

from mcp_handshake.shared.errors import (
    ApprovalDenied,
    ApprovalPending,
    BadRequest,
    Forbidden,
    HandshakeError,
    InternalError,
    InvalidParams,
    InvalidTransaction,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
    TargetError,
    Unauthenticated,
    Unavailable,
    UnknownTool,
    ValidationFailed,
)
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.wire import Grant, StatusReply, ToolInfo

from ._client import CallResult, HandshakeClient, PendingCall
from ._session import (
    CallableSession,
    CommandSession,
    EnvSession,
    FileSession,
    SessionProvider,
    StaticSession,
)
from ._sync import SyncHandshakeClient

__all__ = [
    "ApprovalDenied",
    "ApprovalPending",
    "BadRequest",
    "CallResult",
    "CallableSession",
    "CommandSession",
    "EnvSession",
    "FileSession",
    "Forbidden",
    "Grant",
    "HandshakeClient",
    "HandshakeError",
    "InternalError",
    "InvalidParams",
    "InvalidTransaction",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "PendingCall",
    "ProofKey",
    "RateLimited",
    "SessionProvider",
    "StaticSession",
    "StatusReply",
    "SyncHandshakeClient",
    "TargetError",
    "ToolInfo",
    "Unauthenticated",
    "Unavailable",
    "UnknownTool",
    "ValidationFailed",
]
