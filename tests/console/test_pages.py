"""The console's pages, assets, ops routes and the security headers on every answer."""

from __future__ import annotations

import pytest
import requests

from services.common.errors import ConfigError
from services.common.settings import Settings
from services.console.app import create_app
from services.console.pages import SECURITY_HEADERS, STATIC_DIR

from .conftest import Console

pytestmark = pytest.mark.postgres

CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def get(console: Console, path: str) -> requests.Response:
    return requests.get(console.url + path, timeout=30, allow_redirects=False)


def assert_secured(response: requests.Response) -> None:
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


class TestPages:
    def test_the_list_page(self, console: Console) -> None:
        """``/`` is static/index.html, as HTML."""
        response = get(console, "/")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.content == (STATIC_DIR / "index.html").read_bytes()

    def test_the_task_page_for_any_id(self, console: Console) -> None:
        """``/tasks/{id}`` is static/task.html whatever the id (the page reads it)."""
        for task_id in ("some-task", "unknown%20id", "a.b:c"):
            response = get(console, f"/tasks/{task_id}")
            assert response.status_code == 200
            assert response.content == (STATIC_DIR / "task.html").read_bytes()

    def test_static_assets(self, console: Console) -> None:
        """Files below static/ are served under /static/; nothing outside it is."""
        response = get(console, "/static/task.html")
        assert response.status_code == 200
        assert response.content == (STATIC_DIR / "task.html").read_bytes()
        assert get(console, "/static/../app.py").status_code == 404
        assert get(console, "/static/%2e%2e/app.py").status_code in (403, 404)
        for odd in ("%00", "x" * 300, "a%00b/c"):
            assert get(console, f"/static/{odd}").status_code == 404, odd
        missing = get(console, "/static/nothing.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"

    def test_ops_routes(self, console: Console) -> None:
        """Health, readiness (the registry answers; Kafka is not there and not asked) and
        metrics, like every service."""
        assert get(console, "/healthz").json() == {"status": "ok"}
        assert get(console, "/readyz").json() == {"status": "ready"}
        metrics = get(console, "/metrics")
        assert metrics.status_code == 200
        assert "console_ready 1.0" in metrics.text
        assert "console_dlq_ready 0.0" in metrics.text  # the indexer waits for Kafka


class TestStartup:
    def test_refuses_to_start_without_the_registry(self) -> None:
        """No DATABASE_URL: a configuration error naming it, before anything starts."""
        with pytest.raises(ConfigError, match="DATABASE_URL"):
            create_app(Settings.from_env({}))


class TestSecurityHeaders:
    def test_the_contract_values(self) -> None:
        """The headers are the contract's, word for word."""
        assert SECURITY_HEADERS["Content-Security-Policy"] == CSP

    @pytest.mark.parametrize(
        "path",
        [
            "/",
            "/tasks/x",
            "/static/index.html",
            "/api/v1/counts",
            "/api/v1/tasks?limit=0",
            "/api/v1/tasks/unknown-task",
            "/no/such/route",
            "/healthz",
            "/metrics",
        ],
    )
    def test_on_every_answer(self, console: Console, path: str) -> None:
        """A page, an asset, JSON, a 400, a 404 and the ops routes all carry them."""
        assert_secured(get(console, path))

    def test_on_a_method_not_allowed(self, console: Console) -> None:
        """An error aiohttp raises itself (405) is JSON and carries them too."""
        response = requests.post(console.url + "/api/v1/tasks", timeout=30)
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert_secured(response)
