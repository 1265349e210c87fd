"""Every dashboard query and every rule, run by a real Prometheus scraping the pipeline.

The four services run on real loopback ports against the session broker (the tracker on
the test's own PostgreSQL database, with the provider simulator); a Prometheus
started for this test scrapes them every second and loads the alert rules while callbacks
of every outcome flow, and requests go through the tracker: one delivered by callback, one
whose callbacks are dropped (recovered by a poll), one that fails. Then each expression
goes through Prometheus' HTTP query API:

- every rule and every dashboard query must parse and evaluate without error, and every
  rule's health after evaluation must be "ok" (no many-to-many matches, no bad templates);
- every dashboard query must return at least one series with a finite value.

A dashboard query that comes back empty only because a service does not define one of its
metrics yet (the services grow in parallel) is reported as a warning naming the query and
the missing metric; empty for any other reason is a failure.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.common.settings import Settings

from ..fixtures.prometheus import SCRAPE_SECONDS as _SCRAPE_SECONDS
from ..fixtures.prometheus import PrometheusServer
from ..helpers import eventually
from .pipeline import (
    Pipeline,
    pipeline_settings,
    running_pipeline,
    send_tracker_traffic,
    send_traffic,
)
from .queries import (
    RULES,
    dashboard_queries,
    defined_metrics,
    metric_names,
    rule_queries,
    substitute,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.kafka, pytest.mark.slow]


@dataclass
class Answer:
    status: str
    error: str
    series: list[dict[str, Any]]

    @property
    def finite(self) -> list[float]:
        values = []
        for item in self.series:
            raw = item.get("value", [0, "NaN"])[1]
            value = float(raw)
            if math.isfinite(value):
                values.append(value)
        return values


class PromClient:
    def __init__(self, server: PrometheusServer, http: aiohttp.ClientSession) -> None:
        self._url = server.url
        self._http = http
        #: The instant every query is evaluated at, once pinned (None: now).
        self.at: float | None = None

    async def query(self, expr: str, *, at: float | None = None) -> Answer:
        when = at if at is not None else self.at
        form = {"query": expr} if when is None else {"query": expr, "time": f"{when:.3f}"}
        async with self._http.post(f"{self._url}/api/v1/query", data=form) as r:
            body = await r.json(content_type=None)
        data = body.get("data") or {}
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            result = [{"metric": {}, "value": result}]
        return Answer(body.get("status", "?"), body.get("error", ""), result)

    async def scalar(self, expr: str) -> float:
        answer = await self.query(expr)
        values = answer.finite
        return sum(values) if values else 0.0

    async def rules(self) -> list[dict[str, Any]]:
        async with self._http.get(f"{self._url}/api/v1/rules") as r:
            body = await r.json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    async def alerts(self) -> list[dict[str, Any]]:
        async with self._http.get(f"{self._url}/api/v1/alerts") as r:
            body = await r.json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    async def targets(self) -> list[dict[str, Any]]:
        async with self._http.get(f"{self._url}/api/v1/targets") as r:
            body = await r.json()
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        return targets


async def _wait_for_first_scrape(prom: PromClient, jobs: int) -> None:
    """Until every target has been scraped once: the counters' starting values are known."""

    async def scraped() -> bool:
        targets = await prom.targets()
        return len(targets) == jobs and all(t["health"] == "up" for t in targets)

    await eventually(scraped, timeout=30, interval=0.2, what="Prometheus' first scrape")


async def _pin_to_healthy_scrapes(prom: PromClient, jobs: int) -> None:
    """Evaluate every later query at one past instant when each target's last scrape was up.

    A scrape that times out (1 s here, with four services sharing the test's event loop
    on a busy machine) marks its target's series stale until the next one succeeds, so a
    query in that second sees the target's gauges vanish. Its stale markers carry the
    scrape's start time and are written when it fails, so "now" is not settled yet: an
    instant one interval plus one timeout back is.
    """
    settled = 2 * _SCRAPE_SECONDS

    async def healthy_instant() -> float | None:
        at = time.time() - settled
        answer = await prom.query("up", at=at)
        up = answer.finite
        return at if len(up) == jobs and all(value == 1 for value in up) else None

    prom.at = await eventually(
        healthy_instant, timeout=30, interval=0.5, what="an instant with every target up"
    )


async def _wait_for_pipeline(
    prom: PromClient, defined: set[str], *, accepted: int, garbage: int, sent: int, waves: int
) -> None:
    """Until Prometheus has scraped the effects of all the traffic."""
    handled = accepted + garbage
    expected = {
        "sum(processor_records_total)": handled,
        "sum(archiver_records_total)": handled,
        # Each wave's tracker requests: three submitted, the dropped one recovered by a poll,
        # and the registry's refreshed numbers showing them finished.
        'sum(tracker_submissions_total{outcome="submitted"})': 3 * waves,
        "sum(tracker_recovered_by_poll_total)": waves,
        'max(tracker_tasks{state="completed"})': 2 * waves,
        'max(tracker_tasks{state="failed"})': waves,
    }
    if "ingest_requests_total" in defined:
        expected["sum(ingest_requests_total)"] = sent

    async def scraped_everything() -> bool:
        for expr, at_least in expected.items():
            if await prom.scalar(expr) < at_least:
                return False
        return True

    await eventually(
        scraped_everything, timeout=60, interval=0.5, what=f"Prometheus to see {expected}"
    )


#: What the traffic must visibly move (a query over the last minute, > 0), when the metric
#: exists: the dashboard does not just return numbers, it shows what happened.
PROVOKED = {
    **{
        f'sum(increase(ingest_requests_total{{outcome="{outcome}"}}[1m]))': "ingest_requests_total"
        for outcome in (
            "accepted",
            "duplicate",
            "signature_reused",
            "bad_signature",
            "stale_timestamp",
            "too_large",
            "unsupported_media_type",
            "bad_request",
        )
    },
    'sum(increase(processor_dead_letters_total{reason="undecodable"}[1m]))': (
        "processor_dead_letters_total"
    ),
    'sum(increase(archiver_dead_letters_total{reason="undecodable"}[1m]))': (
        "archiver_dead_letters_total"
    ),
    'sum(increase(processor_records_total{result="ok"}[1m]))': "processor_records_total",
    'sum(increase(archiver_records_total{result="ok"}[1m]))': "archiver_records_total",
    "sum(increase(processor_notes_dropped_total[1m]))": "processor_notes_dropped_total",
    "sum(increase(processor_end_to_end_latency_seconds_count[1m]))": (
        "processor_end_to_end_latency_seconds_count"
    ),
    "sum(increase(archiver_written_bytes_total[1m]))": "archiver_written_bytes_total",
    "sum(increase(ingest_publish_duration_seconds_count[1m]))": (
        "ingest_publish_duration_seconds_count"
    ),
    "min(ingest_kafka_ready)": "ingest_kafka_ready",
    "min(processor_ready)": "processor_ready",
    "min(archiver_ready)": "archiver_ready",
    "min(tracker_ready)": "tracker_ready",
    'sum(increase(tracker_records_total{result="ok"}[1m]))': "tracker_records_total",
    'sum(increase(tracker_submissions_total{outcome="submitted"}[1m]))': (
        "tracker_submissions_total"
    ),
    'sum(increase(tracker_polls_total{outcome="completed"}[1m]))': "tracker_polls_total",
    "sum(increase(tracker_recovered_by_poll_total[1m]))": "tracker_recovered_by_poll_total",
    'sum(increase(tracker_provider_requests_total{outcome="ok"}[1m]))': (
        "tracker_provider_requests_total"
    ),
    "sum(increase(tracker_rate_limit_wait_seconds_count[1m]))": (
        "tracker_rate_limit_wait_seconds_count"
    ),
    "min(tracker_registry_up)": "tracker_registry_up",
}


async def _check_traffic_visible(prom: PromClient, defined: set[str]) -> list[str]:
    problems = []
    for expr, metric in PROVOKED.items():
        if metric in defined and await prom.scalar(expr) <= 0:
            problems.append(f"the traffic does not show: {expr} is not above 0")
    return problems


async def test_every_dashboard_and_rule_query_against_real_prometheus(
    database_url: str, settings: Settings, prometheus_server: Any
) -> None:
    secret = f"obs-secret-{uuid.uuid4().hex}"
    marker = f"ZZOBSMARKER{uuid.uuid4().hex[:10]}"
    settings = pipeline_settings(settings, secret)
    async with running_pipeline(settings, database_url=database_url) as pipeline:
        server: PrometheusServer = prometheus_server(pipeline.targets(), rule_files=[RULES])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            prom = PromClient(server, http)
            await _assert_pipeline_ready(pipeline)
            # A first scrape before any traffic, so that every counter's rise is seen.
            await _wait_for_first_scrape(prom, len(pipeline.targets()))
            defined: set[str] = set()
            for service in pipeline.services:
                defined |= defined_metrics(await pipeline.scrape(service))
            # Two waves: series labelled by topic are born at their first record, so
            # rate() sees their rise only from the second wave on (as in production,
            # where traffic never stops).
            accepted = garbage = sent = 0
            for wave in range(1, 3):
                await send_tracker_traffic(pipeline, run=f"{uuid.uuid4().hex[:8]}-{wave}")
                traffic = await send_traffic(pipeline, secret=secret, marker=marker)
                assert traffic.accepted, f"the ingest accepted nothing: {dict(traffic.statuses)}"
                accepted += len(traffic.accepted)
                garbage += traffic.garbage_records
                sent += sum(traffic.statuses.values())
                await _wait_for_pipeline(
                    prom, defined, accepted=accepted, garbage=garbage, sent=sent, waves=wave
                )
            # Two more scrapes after the settled instant the queries are pinned to, so
            # every rate() window holds the final values.
            await asyncio.sleep(2.5 + 2 * _SCRAPE_SECONDS)
            await _pin_to_healthy_scrapes(prom, len(pipeline.targets()))

            problems, pending, returned = await _check_dashboard(prom, defined)
            problems += await _check_rules(prom)
            problems += await _check_traffic_visible(prom, defined)
            problems += await _check_dead_letter_alert(prom)

    # Every service defines its metrics now: a query on a metric nobody exports is an
    # empty panel, and fails like any other empty query.
    problems += [
        f"{where} returned nothing: {', '.join(sorted(missing))} is defined by no service"
        for where, missing in pending
    ]
    report = _report(returned, pending, problems)
    print(report)  # shown with -s, and in the failure message below
    assert not problems, report


async def _assert_pipeline_ready(pipeline: Pipeline) -> None:
    async def all_ready() -> bool:
        for server in pipeline.services:
            async with pipeline.http.get(server.make_url("/readyz")) as response:
                if response.status != 200:
                    return False
        return True

    await eventually(all_ready, timeout=60, interval=0.2, what="the services to be ready")


async def _check_dashboard(
    prom: PromClient, defined: set[str]
) -> tuple[list[str], list[tuple[str, set[str]]], list[str]]:
    problems: list[str] = []
    pending: list[tuple[str, set[str]]] = []
    returned: list[str] = []
    for query in dashboard_queries():
        expr = substitute(query.expr)
        answer = await prom.query(expr)
        if answer.status != "success":
            problems.append(f"{query.where}: does not evaluate: {answer.error}\n    {expr}")
            continue
        if answer.finite:
            returned.append(f"{query.where}: {len(answer.series)} series\n    {expr}")
            continue
        missing = metric_names(expr) - defined
        if missing:
            pending.append((f"{query.where} ({expr})", missing))
        elif answer.series:
            problems.append(f"{query.where}: only NaN values after traffic\n    {expr}")
        else:
            problems.append(f"{query.where}: empty after traffic\n    {expr}")
    return problems, pending, returned


async def _check_rules(prom: PromClient) -> list[str]:
    problems = []
    for query in rule_queries():
        answer = await prom.query(query.expr)
        if answer.status != "success":
            problems.append(f"{query.where}: does not evaluate: {answer.error}")
    expected = {q.where.removeprefix("rule ") for q in rule_queries()}

    async def all_evaluated() -> list[dict[str, Any]] | None:
        rules = await prom.rules()
        done = [r for r in rules if not str(r.get("lastEvaluation", "")).startswith("0001")]
        return rules if len(done) == len(expected) else None

    rules = await eventually(all_evaluated, timeout=15, interval=0.5, what="rules evaluated")
    assert {r["name"] for r in rules} == expected
    for rule in rules:
        if rule.get("health") != "ok":
            problems.append(
                f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}"
            )
    return problems


async def _check_dead_letter_alert(prom: PromClient) -> list[str]:
    """The garbage record makes SunoMidiDeadLetters fire for both consumers."""
    wanted = {("processor", "undecodable"), ("archiver", "undecodable")}

    async def firing() -> bool:
        alerts = await prom.alerts()
        active = {
            (a["labels"].get("service"), a["labels"].get("reason"))
            for a in alerts
            if a["labels"]["alertname"] == "SunoMidiDeadLetters" and a["state"] == "firing"
        }
        return wanted <= active

    try:
        await eventually(firing, timeout=15, interval=0.5, what="SunoMidiDeadLetters to fire")
    except AssertionError as exc:
        return [f"{exc}; active alerts: {await prom.alerts()}"]
    return []


def _report(returned: list[str], pending: list[tuple[str, set[str]]], problems: list[str]) -> str:
    lines = [f"\n{len(returned)} dashboard queries returned data:"]
    lines += [f"  {line}" for line in returned]
    lines.append(f"{len(pending)} dashboard queries wait for a metric no service defines yet:")
    lines += [f"  {where}: missing {', '.join(sorted(missing))}" for where, missing in pending]
    lines.append(f"{len(problems)} problems:")
    lines += [f"  {line}" for line in problems]
    return "\n".join(lines)
