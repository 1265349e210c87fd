"""Helpers shared by the ingest tests: signed requests, metric reads, app clients."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH, create_app
from services.ingest.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

NOW = 1_760_335_255
KEY = b"test-webhook-key"

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def task() -> str:
    """A task id no other test uses."""
    return f"task-{uuid.uuid4().hex[:12]}"


def callback_body(task_id: str, **extra: Any) -> bytes:
    payload = {
        "task_id": task_id,
        "code": 200,
        "msg": "success",
        "data": {"state": "complete", "instruments": []},
        **extra,
    }
    return json.dumps(payload).encode()


def signed_headers(task_id: str, timestamp: int = NOW, key: bytes = KEY) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, task_id, timestamp),
    }


JSON = {"Content-Type": "application/json"}


def sample(app: web.Application, name: str, **labels: str) -> float:
    from services.common.web import REGISTRY

    value = app[REGISTRY].get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture(name="ingest_client")
def fixture_ingest_client(aiohttp_client: Any, settings: Settings) -> ClientFactory:
    """Build an ingest app with overrides (keys, redis, limits) and a client for it."""

    async def make(
        *,
        keys: tuple[bytes, ...] = (),
        redis_url: str | None = None,
        clock: Callable[[], float] = lambda: float(NOW),
        **ingest: Any,
    ) -> TestClient[web.Request, web.Application]:
        overrides = dict(ingest)
        overrides["webhook_secrets"] = tuple(Secret(k.decode()) for k in keys)
        overrides["redis_url"] = Secret(redis_url) if redis_url else None
        app = create_app(
            settings.with_overrides(ingest=overrides), registry=CollectorRegistry(), clock=clock
        )
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return make


__all__ = ["CALLBACK_PATH", "JSON", "KEY", "NOW", "callback_body", "sample", "signed_headers"]
