"""HTTP errors the ingest answers with: always JSON ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from aiohttp import web

__all__ = ["http_error"]


def http_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
