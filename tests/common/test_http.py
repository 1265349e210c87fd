"""The last-resort middleware: an unexpected error is logged and answered as JSON, no trace."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from services.common.errors import RegistryUnavailableError
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


async def test_a_dependency_away_is_a_503_to_retry(aiohttp_client: Any) -> None:
    """PostgreSQL restarting is no bug: 503 with Retry-After, saying what failed but not
    where (no address), and a warning instead of an error with a traceback."""

    async def registry_down(_request: web.Request) -> web.Response:
        raise RegistryUnavailableError(
            "the task registry could not record a request: Connect call failed ('10.0.0.7', 5432)"
        )

    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/requests", registry_down)
    client = await aiohttp_client(app)
    with capture_logs() as logs:
        response = await client.post("/requests")
        body = await response.json()
    assert (response.status, response.headers["Retry-After"]) == (503, "5")
    assert body["error"] == {
        "code": "unavailable",
        "message": "the task registry could not record a request; try again in a few seconds",
    }
    assert [(e["event"], e["log_level"]) for e in logs] == [("dependency_unavailable", "warning")]
