"""HTTP errors the ingest answers with: always JSON ``{"error": {"code", "message"}}``.

A :class:`Refusal` is raised by the pure parts (body parsing, verification) and turned
into an answer in one place, the request handler, which also counts its outcome.
"""

from __future__ import annotations

from aiohttp import web

from services.common.errors import PipelineError
from services.common.http import http_error

from .metrics import Outcome

__all__ = ["Refusal", "http_error"]


class Refusal(PipelineError):
    """A request refused with a clear answer: HTTP status, error code, message, outcome."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        outcome: Outcome,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.outcome: Outcome = outcome
        self.headers = headers

    def response(self) -> web.Response:
        return http_error(self.status, self.code, self.message, headers=self.headers)
