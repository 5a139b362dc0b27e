"""Code shared by mcp-handshake services and clients: wire types, errors, hashes, settings."""

from .errors import ERRORS_BY_CODE, HandshakeError
from .hashing import canonical_json, params_hash, token_hash
from .settings import Settings
from .subjects import Keys, QueueGroups, Subjects

__all__ = [
    "ERRORS_BY_CODE",
    "HandshakeError",
    "Keys",
    "QueueGroups",
    "Settings",
    "Subjects",
    "canonical_json",
    "params_hash",
    "token_hash",
]
