"""The shared /metrics route: a slow readiness check never holds a scrape."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge

from services.common.web import READINESS, REGISTRY, add_ops_routes


class TestMetricsScrape:
    async def test_a_hanging_check_does_not_hold_the_scrape(self) -> None:
        """While the check hangs, scrapes answer with the last value and start no second
        check; once it ends, the next scrape shows what it found."""
        registry = CollectorRegistry()
        ready = Gauge("demo_ready", "readiness", registry=registry)
        release = asyncio.Event()
        calls = 0

        async def check() -> bool:
            nonlocal calls
            calls += 1
            await release.wait()
            ready.set(1)
            return True

        app = web.Application()
        app[REGISTRY] = registry
        app[READINESS] = check
        add_ops_routes(app)
        async with TestClient(TestServer(app)) as client:
            for _ in range(3):
                response = await client.get("/metrics")
                assert response.status == 200
                assert "demo_ready 0.0" in await response.text()
            assert calls == 1
            release.set()
            await asyncio.sleep(0)  # the check's task runs to its end
            text = await (await client.get("/metrics")).text()
            assert "demo_ready 1.0" in text
            assert calls == 2  # the scrape after the end starts a fresh check
