"""The component lifecycle the host drives, as in the OpenTelemetry Collector:
the host builds components from the config, starts them in order (exporters
before the pipeline before the receivers, so nothing is offered to a stage that
is not running) and stops them in reverse (receivers first, so what was accepted
can still be processed and sent)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Component"]


class Component(Protocol):
    @property
    def name(self) -> str:
        """For logs and the shutdown budget's accounting."""
        ...

    async def start(self) -> None:
        """Bind, spawn tasks; raise (e.g. ListenError) if the component cannot run."""
        ...

    async def stop(self, grace: float) -> None:
        """Finish within `grace` seconds: drain what was accepted, count the rest."""
        ...
