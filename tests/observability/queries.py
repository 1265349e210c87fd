"""The PromQL of the dashboard and of the alert rules, and the metric names contract.

Grafana's template variables are replaced the way Grafana itself would for a Prometheus
scraped every 15 s (``$__rate_interval`` = 1m) before a query goes to Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "CONTRACT",
    "DASHBOARD",
    "GRAFANA_VARIABLES",
    "RULES",
    "Query",
    "dashboard_queries",
    "defined_metrics",
    "metric_names",
    "rule_queries",
    "substitute",
]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "observability" / "grafana" / "suno-midi-dashboard.json"
RULES = ROOT / "deploy" / "observability" / "prometheus" / "suno-midi.rules.yml"
RULE_TESTS = ROOT / "deploy" / "observability" / "prometheus" / "suno-midi.rules.test.yml"
EXAMPLE_CONFIG = ROOT / "deploy" / "observability" / "prometheus" / "prometheus.yml"
DOCS = ROOT / "docs" / "observability.md"

#: Grafana's built-in variables, as Grafana expands them for a 15 s scrape interval over a
#: short time range: ``$__rate_interval`` = max(4 x scrape interval, interval + scrape).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "${__interval}": "15s",
    "$__range": "5m",
    "${__range}": "5m",
}

_CONSUMER = (
    "records_total",
    "record_processing_seconds",
    "dead_letters_total",
    "commit_failures_total",
    "rebalances_total",
    "consumer_lag_records",
    "ready",
)

#: Every metric the services promise (the briefing's list): the dashboard and the rules
#: may use no other name, and must use each of these somewhere.
CONTRACT = frozenset(
    {
        "ingest_requests_total",
        "ingest_request_duration_seconds",
        "ingest_publish_duration_seconds",
        "ingest_body_size_bytes",
        "ingest_dedupe_errors_total",
        "ingest_dedupe_backend_up",
        "ingest_publishes_in_flight",
        "ingest_kafka_ready",
        "ingest_last_accepted_timestamp_seconds",
        "ingest_callbacks_by_kind_total",
        *(
            f"{service}_{name}"
            for service in ("processor", "archiver", "tracker")
            for name in _CONSUMER
        ),
        "processor_notes_total",
        "processor_notes_dropped_total",
        "processor_end_to_end_latency_seconds",
        "processor_midi_written_bytes_total",
        "processor_tasks_total",
        "processor_callbacks_skipped_total",
        "archiver_written_bytes_total",
        "archiver_storage_errors_total",
        "archiver_archived_total",
        "archiver_replayed_total",
        "tracker_tasks",
        "tracker_oldest_open_task_age_seconds",
        "tracker_tasks_at_risk",
        "tracker_submissions_unknown",
        "tracker_submissions_total",
        "tracker_polls_total",
        "tracker_recovered_by_poll_total",
        "tracker_reconcile_last_round_timestamp_seconds",
        "tracker_registry_up",
        "tracker_provider_requests_total",
        "tracker_provider_request_duration_seconds",
        "tracker_rate_limit_wait_seconds",
    }
)

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_NAME = re.compile(r"\b((?:ingest|processor|archiver|tracker)_[a-z0-9_]+)")
_NAME_REGEX = re.compile(r'__name__=~"\(([a-z|]+)\)_([a-z_]+)"')


@dataclass(frozen=True)
class Query:
    where: str  # e.g. 'panel "Request latency" target B' or 'rule SunoMidiDeadLetters'
    expr: str


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced; fails on any variable left over."""
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    leftover = re.findall(r"\$\{?\w+\}?", expr)
    if leftover:
        raise ValueError(f"unknown template variables {leftover} in {expr!r}")
    return expr


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[Query]:
    queries = []
    for panel in _panels(load_dashboard()):
        for target in panel.get("targets", []):
            queries.append(
                Query(f'panel "{panel["title"]}" target {target["refId"]}', target["expr"])
            )
    return queries


def load_rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return loaded


def rule_queries() -> list[Query]:
    queries = []
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            queries.append(Query(f"rule {name}", rule["expr"]))
    return queries


def metric_names(expr: str) -> set[str]:
    """The contract metric names ``expr`` reads (histogram series mapped to their family)."""
    names = set()
    for match in _NAME.findall(expr):
        for suffix in _HISTOGRAM_SUFFIXES:
            if match.endswith(suffix) and match[: -len(suffix)] in CONTRACT:
                match = match[: -len(suffix)]
        names.add(match)
    for services, rest in _NAME_REGEX.findall(expr):
        names.update(f"{service}_{rest}" for service in services.split("|"))
    return names


def defined_metrics(exposition: str) -> set[str]:
    """Every name a /metrics page defines, labelled families without samples included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in _HISTOGRAM_SUFFIXES)
        names.update(sample.name for sample in family.samples)
    return names
