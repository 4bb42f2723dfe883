"""aiohttp's connection handler with a hook for what aiohttp answers itself.

Malformed HTTP is answered 400 by aiohttp's parser before any handler of ours
runs; both HTTP ports (admin, OTLP/HTTP) count it as reason="malformed". aiohttp
has no option for this, so each port's server makes a subclass of this handler.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["MalformedCountingHandler"]


class MalformedCountingHandler(RequestHandler):
    def malformed(self) -> None:
        """Called for each request aiohttp could not parse (its own 400)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400:
            self.malformed()
        return super().handle_error(request, status, exc, message)
