"""JSON errors for every HTTP service: ``{"error": {"code", "message"}}``, whatever aiohttp
or a bug raises (the last word on every answer); a dependency briefly away is a 503."""

from __future__ import annotations

from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import Transient

__all__ = ["RETRY_AFTER_SECONDS", "http_error", "json_errors", "try_again"]

log = structlog.get_logger(__name__)

#: How soon a client may try again when a dependency is briefly away (503).
RETRY_AFTER_SECONDS: Final = 5

_HTTP_CODES: Final = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def http_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def try_again(code: str, what: str) -> web.Response:
    """503 for a dependency that is away for now: ``what`` failed, with ``Retry-After``."""
    return http_error(
        503,
        code,
        f"{what}; try again in a few seconds",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error aiohttp raises answers as JSON; anything unexpected is logged, not leaked."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 404:
            message = f"no such endpoint: {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow')}"
        return http_error(exc.status, code, message, headers=headers)
    except Transient as exc:
        # A dependency is away (PostgreSQL restarting, say): the client should try again.
        # The message names what failed, not where (no addresses in answers).
        what = str(exc).partition(":")[0]
        log.warning(
            "dependency_unavailable", method=request.method, path=request.path, error=str(exc)
        )
        return try_again("unavailable", what)
    except Exception:
        # Last resort only: every known bad input has its own answer above this line.
        log.exception("unexpected_error", method=request.method, path=request.path)
        return http_error(500, "internal_error", "an unexpected error occurred; it was logged")
