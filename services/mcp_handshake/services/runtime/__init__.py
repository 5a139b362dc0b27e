"""What every worker kind shares: the endpoint wrapper, discovery, logging, the run loop."""

from mcp_handshake.services.runtime.endpoint import Endpoint, Request
from mcp_handshake.services.runtime.service import MicroService

__all__ = ["Endpoint", "MicroService", "Request"]
