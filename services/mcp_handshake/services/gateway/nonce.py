"""DPoP server nonces (RFC 9449 section 8): see :class:`~mcp_handshake.services.core.dpop.
NonceIssuer`, shared with the execute workers that check them too."""

from __future__ import annotations

from mcp_handshake.services.core.dpop import NONCE_TTL_S, NonceIssuer

__all__ = ["NONCE_TTL_S", "NonceIssuer"]
