"""Health at a glance (``GET /api/v1/health``): each service's readiness, consumer lag,
error and dead-letter rates, read from the services' own ``/metrics`` or from Prometheus,
and the age of the oldest open task from the registry.

A service that does not answer, or answers something else than the exposition format, is
``unreachable``, never an error of the console's: the strip exists to show what is down.
Scraping directly, a rate needs two samples: each console process keeps its previous
scrape of every service in memory (:class:`Scraper`), so the first answer after a start
has no rates. With Prometheus, its ``rate(...[5m])`` gives them at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from services.common.errors import ConfigError
from services.common.settings import ConsoleSettings
from services.tracker.registry import Registry

from .api import API_PREFIX
from .api import REGISTRY as TASKS

__all__ = [
    "CONSUMERS",
    "MIN_RATE_WINDOW_SECONDS",
    "Prometheus",
    "Scraper",
    "ServiceHealth",
    "Source",
    "health_document",
    "parse_targets",
    "setup_health",
    "source_of",
]

#: The services the strip always shows: the consumers whose lag means callbacks wait.
CONSUMERS = ("processor", "archiver", "tracker")

#: A scrape closer than this to the kept one is not kept: a rate over a few milliseconds
#: says nothing (several open pages each ask every 5 s).
MIN_RATE_WINDOW_SECONDS = 1.0

Status = Literal["ok", "unreachable", "not_configured"]


@dataclass(frozen=True)
class Signals:
    """Where one service's signals are in its metrics (names as deploy/observability uses
    them): its readiness gauge, its lag gauge, and the counters behind its two rates as
    ``(sample name, label, values counted)``, ``None`` where it has none."""

    ready: str
    lag: str | None
    errors: tuple[str, str, frozenset[str]] | None
    dead_letters: str | None

    @classmethod
    def of(cls, service: str) -> Signals:
        if service == "ingest":
            failed = frozenset({"unavailable", "overloaded"})
            return cls(
                "ingest_kafka_ready", None, ("ingest_requests_total", "outcome", failed), None
            )
        return cls(
            f"{service}_ready",
            f"{service}_consumer_lag_records",
            (f"{service}_records_total", "result", frozenset({"retried"})),
            f"{service}_dead_letters_total",
        )


@dataclass(frozen=True)
class ServiceHealth:
    """One panel of the strip. Rates are per second; ``None`` is "not known"."""

    name: str
    status: Status
    ready: bool | None = None
    lag_records: float | None = None
    error_rate: float | None = None
    dead_letter_rate: float | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "ready": self.ready,
            "lag_records": self.lag_records,
            "error_rate": self.error_rate,
            "dead_letter_rate": self.dead_letter_rate,
            "message": self.message,
        }


def parse_targets(text: str) -> dict[str, str]:
    """``CONSOLE_METRICS_URLS`` (``name=url,name=url``) as a mapping, in order."""
    targets: dict[str, str] = {}
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        name, sep, url = (item.strip() for item in part.partition("="))
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"CONSOLE_METRICS_URLS must be name=http(s)://host:port/metrics pairs, "
                f"comma-separated; got {part!r}"
            )
        targets[name] = url
    return targets


def _unreachable(name: str, message: str) -> ServiceHealth:
    return ServiceHealth(name, "unreachable", message=message)


@dataclass
class _Sample:
    at: float
    errors: float | None
    dead_letters: float | None


@dataclass
class Scraper:
    """Reads each service's ``/metrics``; keeps the previous scrape per service for rates."""

    targets: Mapping[str, str]
    timeout: float
    _previous: dict[str, _Sample] = field(default_factory=dict)

    source = "metrics"
    rates = "previous_scrape"

    def names(self) -> list[str]:
        return [*CONSUMERS, *(name for name in self.targets if name not in CONSUMERS)]

    async def read(self, http: aiohttp.ClientSession) -> list[ServiceHealth]:
        return list(await asyncio.gather(*(self._one(http, name) for name in self.names())))

    async def _one(self, http: aiohttp.ClientSession, name: str) -> ServiceHealth:
        url = self.targets.get(name)
        if url is None:
            return ServiceHealth(name, "not_configured", message="not configured")
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with http.get(url, timeout=timeout) as answer:
                if answer.status != 200:
                    return _unreachable(name, f"/metrics answered {answer.status}")
                text = await answer.text()
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            return _unreachable(name, f"no answer: {type(exc).__name__}")
        try:
            values = _values(text)
        except (ValueError, IndexError, KeyError, TypeError):  # the parser's ways to refuse
            return _unreachable(name, "the answer is not Prometheus' text format")
        return self._health(name, Signals.of(name), values, time.monotonic())

    def _health(self, name: str, signals: Signals, values: _Values, now: float) -> ServiceHealth:
        current = _Sample(now, values.errors(signals), values.total(signals.dead_letters))
        previous = self._previous.get(name)
        if previous is None or now - previous.at >= MIN_RATE_WINDOW_SECONDS:
            self._previous[name] = current
        ready = values.first(signals.ready)
        return ServiceHealth(
            name,
            "ok",
            ready=None if ready is None else ready >= 1,
            lag_records=values.total(signals.lag),
            error_rate=_rate(previous, current, "errors"),
            dead_letter_rate=_rate(previous, current, "dead_letters"),
        )


def _rate(previous: _Sample | None, current: _Sample, which: str) -> float | None:
    """Per second between two scrapes; a counter that went down restarted from 0."""
    if previous is None or current.at <= previous.at:
        return None
    before, now = getattr(previous, which), getattr(current, which)
    if before is None or now is None:
        return None
    increase = now - before if now >= before else now
    return float(increase / (current.at - previous.at))


@dataclass(frozen=True)
class _Values:
    """The samples of one exposition, by sample name: ``[(labels, value)]``."""

    samples: Mapping[str, list[tuple[Mapping[str, str], float]]]

    def first(self, name: str | None) -> float | None:
        found = self.samples.get(name or "")
        return found[0][1] if found else None

    def total(self, name: str | None) -> float | None:
        """The sum over every labelled series; ``None`` when the family is not exported.
        A lag gauge with no series (no partition assigned) is 0."""
        if name is None or name not in self.samples:
            return None
        return sum(value for _, value in self.samples[name])

    def errors(self, signals: Signals) -> float | None:
        if signals.errors is None:
            return None
        name, label, counted = signals.errors
        if name not in self.samples:
            return None
        return sum(value for labels, value in self.samples[name] if labels.get(label) in counted)


def _values(text: str) -> _Values:
    samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        # A family without samples (a labelled gauge with no series yet) still exists.
        samples.setdefault(family.name, [])
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return _Values(samples)


#: What a query that did not get an answer raises: no connection, a timeout, not JSON, not
#: a query result.
_QUERY_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError)


@dataclass(frozen=True)
class Prometheus:
    """Reads the same signals from Prometheus: ``up`` for reachability, ``rate(...[5m])``."""

    url: str
    timeout: float

    source = "prometheus"
    rates = "prometheus_rate"

    def names(self) -> list[str]:
        return [*CONSUMERS, "ingest"]

    async def read(self, http: aiohttp.ClientSession) -> list[ServiceHealth]:
        return list(await asyncio.gather(*(self._one(http, name) for name in self.names())))

    async def _one(self, http: aiohttp.ClientSession, name: str) -> ServiceHealth:
        queries = _queries(name, Signals.of(name))
        found = await asyncio.gather(
            *(self._query(http, q) for q in queries.values()), return_exceptions=True
        )
        got: dict[str, float | None] = {}
        for key, value in zip(queries, found, strict=True):
            if isinstance(value, BaseException):
                if not isinstance(value, _QUERY_ERRORS):
                    raise value
                return _unreachable(name, f"Prometheus did not answer: {type(value).__name__}")
            got[key] = value
        if got["up"] is None:
            return _unreachable(name, f"Prometheus scrapes no job suno-midi-{name}")
        if got["up"] < 1:
            return _unreachable(name, "Prometheus cannot scrape it (up == 0)")
        ready = got["ready"]
        return ServiceHealth(
            name,
            "ok",
            ready=None if ready is None else ready >= 1,
            lag_records=got.get("lag"),
            error_rate=got.get("errors"),
            dead_letter_rate=got.get("dead_letters"),
        )

    async def _query(self, http: aiohttp.ClientSession, query: str) -> float | None:
        """The one value of an aggregated query; ``None`` when it has no series."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        url = f"{self.url.rstrip('/')}/api/v1/query"
        async with http.get(url, params={"query": query}, timeout=timeout) as answer:
            document = await answer.json(content_type=None)
        if document.get("status") != "success":
            raise ValueError(document.get("error", "query failed"))
        result = document["data"]["result"]
        return float(result[0]["value"][1]) if result else None


def _queries(name: str, signals: Signals) -> dict[str, str]:
    """The PromQL per signal, as the dashboard and alert rules write them."""
    queries = {
        "up": f'min(up{{job="suno-midi-{name}"}})',
        "ready": f"min({signals.ready})",
    }
    if signals.lag is not None:
        queries["lag"] = f"sum({signals.lag})"
    if signals.errors is not None:
        counter, label, counted = signals.errors
        chosen = "|".join(sorted(counted))
        queries["errors"] = f'sum(rate({counter}{{{label}=~"{chosen}"}}[5m]))'
    if signals.dead_letters is not None:
        queries["dead_letters"] = f"sum(rate({signals.dead_letters}[5m]))"
    return queries


Source = Scraper | Prometheus | None


def source_of(metrics_urls: str, prometheus_url: str | None, timeout: float) -> Source:
    """Prometheus when configured, else the services' own ``/metrics``, else nothing."""
    if prometheus_url and prometheus_url.strip():
        return Prometheus(prometheus_url.strip(), timeout)
    targets = parse_targets(metrics_urls)
    return Scraper(targets, timeout) if targets else None


async def health_document(
    source: Source, http: aiohttp.ClientSession, registry: Registry
) -> dict[str, Any]:
    """The answer of ``GET /api/v1/health``."""
    if source is None:
        services: Iterable[ServiceHealth] = (
            ServiceHealth(name, "not_configured", message="not configured") for name in CONSUMERS
        )
    else:
        services = await source.read(http)
    try:
        oldest: float | None = await registry.oldest_open_age()
        registry_up = True
    except Exception:  # the registry away: the strip still shows the services
        oldest, registry_up = None, False
    return {
        "source": "none" if source is None else source.source,
        "rates": None if source is None else source.rates,
        "registry_up": registry_up,
        "oldest_open_seconds": oldest,
        "services": [service.as_json() for service in services],
    }


HEALTH_SOURCE: web.AppKey[Source] = web.AppKey("console_health_source")
HEALTH_HTTP = web.AppKey("console_health_http", aiohttp.ClientSession)


def setup_health(app: web.Application, settings: ConsoleSettings) -> None:
    """``GET /api/v1/health`` and the HTTP client it scrapes with (a ``cleanup_ctx``).
    A malformed ``CONSOLE_METRICS_URLS`` stops the start-up here."""
    app[HEALTH_SOURCE] = source_of(
        settings.metrics_urls, settings.prometheus_url, settings.health_timeout_seconds
    )
    app.cleanup_ctx.append(_http_ctx)
    app.router.add_get(f"{API_PREFIX}/health", _health)


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[HEALTH_HTTP] = http
        yield


async def _health(request: web.Request) -> web.Response:
    app = request.app
    document = await health_document(app[HEALTH_SOURCE], app[HEALTH_HTTP], app[TASKS])
    return web.Response(body=orjson.dumps(document), content_type="application/json")
