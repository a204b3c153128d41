"""Model endpoints. Each kind turns a request into a call and every answer into an outcome."""

from shared.endpoints.base import Endpoint, EndpointReply

__all__ = ["Endpoint", "EndpointReply"]
