"""A request the receivers turn away, with its HTTP status and gRPC code."""

from __future__ import annotations

__all__ = ["RequestError"]


class RequestError(Exception):
    def __init__(self, status: int, reason: str, message: str, grpc_code: int) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.grpc_code = grpc_code
