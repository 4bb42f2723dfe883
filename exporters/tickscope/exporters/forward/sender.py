"""What a sender answers, and the interface the forwarder sends through (one
implementation per protocol: http.py, grpc.py)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["OK", "SendResult", "Sender"]


class SendResult:
    """An export's outcome: success (OK); retryable, with the upstream's delay hint
    if it gave one; or refused, wholly or for `rejected` spans (partial success)."""

    __slots__ = ("delay", "message", "rejected", "retryable")

    def __init__(
        self,
        retryable: bool = False,
        delay: float | None = None,
        message: str = "",
        rejected: int = 0,
    ) -> None:
        self.retryable = retryable
        self.delay = delay
        self.message = message
        self.rejected = rejected


OK = SendResult()


class Sender(Protocol):
    async def send(self, body: bytes) -> SendResult:
        """Export one serialized ExportTraceServiceRequest; never raises for an
        upstream's failure (it becomes a SendResult)."""
        ...

    async def close(self) -> None: ...
