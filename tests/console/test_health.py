"""``GET /api/v1/health`` against the real services: the processor, the archiver, the
tracker and the ingest running on real Kafka and PostgreSQL, read through their own
``/metrics`` and through a real Prometheus scraping them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from devenv.processes import free_port
from services.common.errors import ConfigError
from services.common.settings import Secret, Settings
from services.console.app import create_app
from services.console.health import CONSUMERS
from services.tracker.registry import Registry

from ..fixtures.browser import Browser
from ..fixtures.prometheus import PrometheusServer
from ..helpers import eventually
from ..observability.pipeline import Pipeline, pipeline_settings, running_pipeline
from .browser import assert_clean_log
from .conftest import Console, _serve, console_settings

Health = dict[str, Any]


def by_name(health: Health) -> dict[str, Health]:
    return {service["name"]: service for service in health["services"]}


async def start_console(settings: Settings, database_url: str, **console: Any) -> TestServer:
    configured = settings.with_overrides(
        tracker={"database_url": Secret(database_url)}, console={"port": 0, **console}
    )
    server = TestServer(create_app(configured), host="127.0.0.1")
    await server.start_server()
    return server


async def read_health(http: aiohttp.ClientSession, console: TestServer) -> Health:
    async with http.get(console.make_url("/api/v1/health")) as answer:
        assert answer.status == 200, await answer.text()
        health: Health = await answer.json()
        return health


async def send_garbage(pipeline: Pipeline) -> None:
    """A record no schema decodes on the callbacks topic: every consumer of it (the
    processor, the archiver, the tracker) dead-letters it."""
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            pipeline.settings.kafka.topics.callbacks,
            key=f"garbage-{uuid.uuid4().hex[:8]}".encode(),
            value=b"\x00 garbage, not an Avro single-object message",
        )
    finally:
        await producer.stop()


def metrics_url(server: TestServer, path: str = "/metrics") -> str:
    return str(server.make_url(path))


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.slow
async def test_health_reads_the_services_own_metrics(database_url: str, settings: Settings) -> None:
    """Readiness and lag at once; rates from the second scrape on, the dead letters of a
    garbage record among them; a closed port and a non-metrics answer are unreachable."""
    async with running_pipeline(
        pipeline_settings(settings, "health-key"), database_url=database_url
    ) as pipeline:
        assert pipeline.tracker is not None
        urls = {
            "processor": metrics_url(pipeline.processor),
            "archiver": metrics_url(pipeline.archiver),
            "tracker": metrics_url(pipeline.tracker),
            "ingest": metrics_url(pipeline.ingest),
            "gone": f"http://127.0.0.1:{free_port()}/metrics",
            "wrong": metrics_url(pipeline.ingest, "/healthz"),
        }
        metrics_urls = ",".join(f"{name}={url}" for name, url in urls.items())
        console = await start_console(settings, database_url, metrics_urls=metrics_urls)
        http = pipeline.http
        try:
            first = await read_health(http, console)
            assert (first["source"], first["rates"]) == ("metrics", "previous_scrape")
            services = by_name(first)
            assert list(services) == ["processor", "archiver", "tracker", "ingest", "gone", "wrong"]
            for name in ("processor", "archiver", "tracker", "ingest"):
                assert services[name]["status"] == "ok", services[name]
                assert services[name]["error_rate"] is None  # one sample only
            for name in ("processor", "archiver", "tracker"):
                assert isinstance(services[name]["lag_records"], int | float)
            assert services["ingest"]["lag_records"] is None
            assert services["gone"]["status"] == "unreachable"
            assert services["gone"]["message"].startswith("no answer")
            assert services["wrong"]["status"] == "unreachable"
            assert "text format" in services["wrong"]["message"]
            assert first["registry_up"] is True
            assert first["oldest_open_seconds"] is None

            async def all_ready() -> Health | None:
                health = await read_health(http, console)
                ready = all(by_name(health)[name]["ready"] for name in ("processor", "archiver"))
                return health if ready else None

            await eventually(all_ready, timeout=60, interval=0.3, what="consumers ready")
            await send_garbage(pipeline)

            async def dead_lettered() -> Health | None:
                health = by_name(await read_health(http, console))
                rates = [health[name]["dead_letter_rate"] for name in CONSUMERS]
                return health if all(rate and rate > 0 for rate in rates) else None

            health = await eventually(
                dead_lettered, timeout=60, interval=0.3, what="dead letters in the rates"
            )
            assert health["ingest"]["dead_letter_rate"] is None  # it has no dead letters
            await open_task(database_url)
            assert (await read_health(http, console))["oldest_open_seconds"] >= 0
        finally:
            await console.close()


async def open_task(database_url: str) -> None:
    registry = await Registry.connect(database_url, max_size=1)
    try:
        await registry.request(uuid.uuid4().hex, "source", None, "http://ingest/callback")
    finally:
        await registry.close()


@pytest.mark.postgres
def test_without_sources_every_consumer_says_not_configured(console: Console) -> None:
    answer = requests.get(f"{console.url}/api/v1/health", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
    health = answer.json()
    assert (health["source"], health["rates"]) == ("none", None)
    assert [(s["name"], s["status"]) for s in health["services"]] == [
        ("processor", "not_configured"),
        ("archiver", "not_configured"),
        ("tracker", "not_configured"),
    ]


@pytest.mark.parametrize("urls", ["processor", "processor=", "=http://x", "processor=ftp://x"])
def test_a_malformed_metrics_list_stops_the_start(urls: str, tmp_path: Any) -> None:
    settings = console_settings("postgresql://nowhere/db", tmp_path)
    with pytest.raises(ConfigError, match="CONSOLE_METRICS_URLS"):
        create_app(settings.with_overrides(console={"metrics_urls": urls}))


@pytest.mark.postgres
async def test_prometheus_away_is_unreachable_not_an_error(
    database_url: str, tmp_path: Path
) -> None:
    """Nothing listens at CONSOLE_PROMETHEUS_URL: every panel says so, the answer is a 200."""
    settings = console_settings(database_url, tmp_path)
    away = f"http://127.0.0.1:{free_port()}"
    console = await start_console(settings, database_url, prometheus_url=away)
    try:
        async with aiohttp.ClientSession() as http:
            health = await read_health(http, console)
    finally:
        await console.close()
    assert health["source"] == "prometheus"
    assert {s["name"]: s["status"] for s in health["services"]} == dict.fromkeys(
        ("processor", "archiver", "tracker", "ingest"), "unreachable"
    )
    assert all(s["message"].startswith("Prometheus did not answer") for s in health["services"])


@pytest.mark.prometheus
@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.slow
async def test_health_reads_prometheus(
    database_url: str, settings: Settings, prometheus_server: Any
) -> None:
    """The same panels from the real Prometheus scraping the services; the tracker, which
    it does not scrape here, is unreachable."""
    async with running_pipeline(pipeline_settings(settings, "health-key")) as pipeline:
        prometheus: PrometheusServer = prometheus_server(pipeline.targets())
        console = await start_console(settings, database_url, prometheus_url=prometheus.url)
        http = pipeline.http
        try:

            async def scraped() -> dict[str, Health] | None:
                health = await read_health(http, console)
                assert (health["source"], health["rates"]) == ("prometheus", "prometheus_rate")
                services = by_name(health)
                wanted = ("processor", "archiver", "ingest")
                return services if all(services[n]["ready"] for n in wanted) else None

            services = await eventually(scraped, timeout=60, interval=0.5, what="scraped")
            assert isinstance(services["processor"]["lag_records"], int | float)
            assert services["tracker"]["status"] == "unreachable"
            assert "suno-midi-tracker" in services["tracker"]["message"]
            await send_garbage(pipeline)

            async def dead_lettered() -> Health | None:
                services = by_name(await read_health(http, console))
                rate = services["processor"]["dead_letter_rate"]
                return services if rate and rate > 0 else None

            await eventually(dead_lettered, timeout=60, interval=0.5, what="rate() > 0")
        finally:
            await console.close()


@pytest.mark.postgres
def test_the_list_page_shows_the_health_strip(
    browser: Browser, console: Console, database_url: str, tmp_path: Path
) -> None:
    """A second real console reads the first one's real ``/metrics`` (its ``console_ready``
    gauge) and a closed port: the strip shows one panel ready, one unreachable, and the
    consumers not configured."""
    gone = f"http://127.0.0.1:{free_port()}/metrics"
    urls = f"console={console.url}/metrics,gone={gone}"
    settings = console_settings(database_url, tmp_path / "viewer")
    app = create_app(settings.with_overrides(console={"metrics_urls": urls}))
    with serving(app, database_url) as viewer:
        browser.open(f"{viewer}/")
        browser.wait_for_attribute("#health", "data-status", "ready")
        panels = {
            panel.get_attribute("data-service"): panel.get_attribute("data-health")
            for panel in browser.find_all("#health .health-panel")
        }
        assert panels == {
            "processor": "not_configured",
            "archiver": "not_configured",
            "tracker": "not_configured",
            "console": "ok",
            "gone": "unreachable",
        }
        ready = browser.find("#health [data-service='console']")
        assert "ready" in ready.text
        lag = ready.find_element("css selector", "[data-signal='lag']")
        assert lag.text.endswith("—")  # the console has no consumer lag
        browser.screenshot("health")
        assert_clean_log(browser)


@contextlib.contextmanager
def serving(app: web.Application, database_url: str) -> Iterator[str]:
    """``app`` served like the ``console`` fixture's, from a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    started: Future[tuple[str, Registry]] = Future()
    thread = threading.Thread(target=_serve, args=(app, loop, database_url, started), daemon=True)
    thread.start()
    url, _ = started.result(timeout=60)
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
