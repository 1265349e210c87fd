"""The last-resort middleware: an unexpected error is logged and answered as JSON, no trace."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from services.common.http import json_errors


async def test_unexpected_error_is_json_without_a_traceback(aiohttp_client: Any) -> None:
    """A bug answers 500 {"error": ...}; the traceback goes to the log only."""

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    with capture_logs() as logs:
        response = await client.get("/broken")
        text = await response.text()
    assert response.status == 500
    assert response.content_type == "application/json"
    assert "secret internals" not in text and "Traceback" not in text
    assert (await response.json())["error"]["code"] == "internal_error"
    assert [entry["event"] for entry in logs] == ["unexpected_error"]
    assert logs[0]["log_level"] == "error" and logs[0]["exc_info"]
