"""The tracker refuses to start without what it cannot work without, saying what."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import ConfigError
from services.common.settings import Secret, Settings
from services.tracker.app import create_app

COMPLETE = {
    "database_url": Secret("postgresql://x@127.0.0.1/db"),
    "api_key": Secret("k"),
    "callback_url": "https://hooks.example/callbacks/suno/midi",
}


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("database_url", "DATABASE_URL"),
        ("api_key", "SUNO_API_KEY"),
        ("callback_url", "TRACKER_CALLBACK_URL"),
    ],
)
def test_each_missing_setting_is_named(missing: str, variable: str) -> None:
    settings = Settings().with_overrides(tracker={**COMPLETE, missing: None})
    with pytest.raises(ConfigError, match=variable):
        create_app(settings, registry=CollectorRegistry())


def test_a_blank_secret_counts_as_missing() -> None:
    settings = Settings().with_overrides(tracker={**COMPLETE, "api_key": Secret("  ")})
    with pytest.raises(ConfigError, match="SUNO_API_KEY"):
        create_app(settings, registry=CollectorRegistry())


def test_the_callback_url_must_be_http() -> None:
    settings = Settings().with_overrides(tracker={**COMPLETE, "callback_url": "ftp://x/cb"})
    with pytest.raises(ConfigError, match="TRACKER_CALLBACK_URL must be an http"):
        create_app(settings, registry=CollectorRegistry())


def test_complete_settings_build_the_app() -> None:
    """No I/O yet (the resources open when the app starts); its routes are there."""
    app = create_app(Settings().with_overrides(tracker=COMPLETE), registry=CollectorRegistry())
    paths = {route.resource.canonical for route in app.router.routes() if route.resource}
    assert {"/v1/midi/requests", "/v1/midi/tasks", "/healthz", "/metrics"} <= paths
