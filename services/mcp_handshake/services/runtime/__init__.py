"""What every worker kind shares: the endpoint wrapper, discovery, logging, the run loop."""

from .endpoint import Endpoint, Request
from .service import MicroService

__all__ = ["Endpoint", "MicroService", "Request"]
