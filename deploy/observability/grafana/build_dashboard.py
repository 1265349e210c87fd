"""Build the Grafana dashboard JSON from a short Python description of its panels.

A dashboard written by hand is thousands of lines where a typo in one query hides easily;
here each panel is a few lines, and the JSON beside this file is generated from them::

    python deploy/observability/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/observability/grafana/build_dashboard.py --check  # exit 1 if out of date

Every query is run against a real Prometheus scraping the pipeline by
tests/observability/test_prometheus.py. After changing the JSON, regenerate the Kubernetes
ConfigMap with ``python deploy/k8s/sync_monitoring.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OUTPUT", "Panel", "Target", "build", "main", "render"]

OUTPUT = Path(__file__).with_name("suno-midi-dashboard.json")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

#: Outcomes of ingest_requests_total, grouped as the dashboard and the alerts read them.
SERVER_ERRORS = "unavailable|overloaded"
REJECTED = (
    "bad_signature|stale_timestamp|signature_reused|too_large|unsupported_media_type|bad_request"
    "|incomplete_body"
)
SIGNATURE_FAILURES = "bad_signature|stale_timestamp|signature_reused"
CONSUMERS = ("processor", "archiver")


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    #: Stat panels: value -> text mappings, and the thresholds' base colour.
    mappings: tuple[tuple[str, str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def quantiles(
    metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> tuple[Target, ...]:
    """p50/p95/p99 of a histogram over the rate interval, optionally split ``by`` a label."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in qs
    )


def ingest_panels() -> list[Panel]:
    total = f"sum(rate(ingest_requests_total[{RATE}]))"
    return [
        Panel(
            "Callbacks by outcome",
            "Requests per second at the callback endpoint, by outcome (accepted, duplicate, "
            "bad_signature, stale_timestamp, signature_reused, too_large, "
            "unsupported_media_type, bad_request, unavailable, overloaded, incomplete_body).",
            (Target(f"sum by (outcome) (rate(ingest_requests_total[{RATE}]))", "{{outcome}}"),),
            unit="reqps",
            extra={"stack": True},
        ),
        Panel(
            "Error ratio",
            "Share of requests answered 503 (unavailable: Kafka did not acknowledge in time; "
            "overloaded: too many publishes in flight), and share refused as bad input or "
            "bad signature (4xx). The 503 share is what SunoIngestErrorRateHigh alerts on.",
            (
                Target(
                    f'(sum(rate(ingest_requests_total{{outcome=~"{SERVER_ERRORS}"}}[{RATE}])) '
                    f"or vector(0)) / {total}",
                    "503 (unavailable, overloaded)",
                ),
                Target(
                    f'(sum(rate(ingest_requests_total{{outcome=~"{REJECTED}"}}[{RATE}])) '
                    f"or vector(0)) / {total}",
                    "4xx (rejected)",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Request latency",
            "p50, p95 and p99 of the time from request to answer, every outcome included. "
            "The provider gives up on an attempt after 15 s.",
            quantiles("ingest_request_duration_seconds"),
            unit="s",
        ),
        Panel(
            "Publish latency",
            "p50, p95 and p99 of the time Kafka takes to acknowledge an accepted callback "
            "(acks=all). Past INGEST_PUBLISH_TIMEOUT_SECONDS the ingest answers 503.",
            quantiles("ingest_publish_duration_seconds"),
            unit="s",
        ),
        Panel(
            "Publishes in flight",
            "Publishes waiting for Kafka's acknowledgement, summed over replicas. Past "
            "INGEST_MAX_IN_FLIGHT per replica, new callbacks get 503 overloaded.",
            (Target("sum(ingest_publishes_in_flight)", "in flight"),),
        ),
        Panel(
            "Signature failures",
            "Requests refused for their signature, by outcome. A spike means a rotated or wrong "
            "key, a skewed clock or a replay attempt (alert SunoIngestSignatureFailures).",
            (
                Target(
                    "sum by (outcome) (rate(ingest_requests_total"
                    f'{{outcome=~"{SIGNATURE_FAILURES}"}}[{RATE}]))',
                    "{{outcome}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Dedupe hits",
            "Repeated deliveries recognised and answered 200 duplicate without publishing, "
            "per second.",
            (
                Target(
                    f'sum(rate(ingest_requests_total{{outcome="duplicate"}}[{RATE}]))',
                    "duplicates/s",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Dedupe store",
            "1 when every replica reaches its dedupe store (Redis), and dedupe store errors per "
            "second by operation. While it is down the ingest keeps accepting, but repeats "
            "across replicas reach Kafka again.",
            (
                Target("min(ingest_dedupe_backend_up)", "backend up (min over replicas)"),
                Target(
                    f"sum(rate(ingest_dedupe_errors_total[{RATE}])) or vector(0)",
                    "errors/s",
                ),
            ),
        ),
        Panel(
            "Body size",
            "p50 and p99 of the size of callback bodies.",
            quantiles("ingest_body_size_bytes", qs=(0.5, 0.99)),
            unit="bytes",
        ),
        Panel(
            "Time since the last accepted callback",
            "Seconds since any replica accepted a callback. Alert SunoMidiNoCallbacks fires past "
            "suno_midi:no_callbacks_threshold:seconds.",
            (Target("time() - max(ingest_last_accepted_timestamp_seconds)", "silence"),),
            unit="s",
            kind="stat",
            width=6,
            height=6,
        ),
    ]


def consumer_panels() -> list[Panel]:
    return [
        Panel(
            "Consumer throughput",
            "Records handled per second, by consumer and result (ok, dead_lettered, retried).",
            tuple(
                Target(
                    f"sum by (result) (rate({svc}_records_total[{RATE}]))",
                    f"{svc} {{{{result}}}}",
                )
                for svc in CONSUMERS
            ),
            unit="ops",
        ),
        Panel(
            "Consumer errors",
            "Records per second that were not handled at the first attempt: retried, or sent "
            "to the dead-letter topic.",
            tuple(
                Target(
                    f'sum by (result) (rate({svc}_records_total{{result!="ok"}}[{RATE}]))',
                    f"{svc} {{{{result}}}}",
                )
                for svc in CONSUMERS
            ),
            unit="ops",
        ),
        Panel(
            "Record processing duration",
            "p50 and p99 of the time to handle one record until its offset may be committed, "
            "retries included.",
            tuple(
                target
                for svc in CONSUMERS
                for target in (
                    Target(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate({svc}_record_processing_seconds_bucket[{RATE}])))",
                        f"{svc} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                )
            ),
            unit="s",
        ),
        Panel(
            "Consumer lag per partition",
            "High watermark minus the next offset to handle, per partition, as each consumer "
            "computes it. Alerts SunoConsumerLagHigh and SunoConsumerLagGrowing read its sum.",
            tuple(
                Target(
                    f"sum by (topic, partition) ({svc}_consumer_lag_records)",
                    f"{svc} {{{{topic}}}}/{{{{partition}}}}",
                )
                for svc in CONSUMERS
            ),
            width=12,
        ),
        Panel(
            "Dead letters by reason",
            "Records sent to the dead-letter topic per interval, by consumer and reason. "
            "Anything here fires SunoMidiDeadLetters.",
            tuple(
                Target(
                    f"sum by (reason) (increase({svc}_dead_letters_total[{RATE}]))",
                    f"{svc} {{{{reason}}}}",
                )
                for svc in CONSUMERS
            ),
            width=12,
            extra={"draw": "bars"},
        ),
        Panel(
            "Commits failed and rebalances",
            "Offset commits that failed (the record is handled again, idempotently) and "
            "partition rebalances by event, per interval.",
            tuple(
                target
                for svc in CONSUMERS
                for target in (
                    Target(
                        f"sum(increase({svc}_commit_failures_total[{RATE}]))",
                        f"{svc} commit failures",
                    ),
                    Target(
                        f"sum by (event) (increase({svc}_rebalances_total[{RATE}]))",
                        f"{svc} {{{{event}}}}",
                    ),
                )
            ),
            width=12,
        ),
        Panel(
            "Readiness",
            "1 when the service reaches Kafka and its topics exist (what /readyz answers), "
            "minimum over replicas. Alerts SunoIngestKafkaUnavailable, SunoConsumerNotReady.",
            (
                Target("min(ingest_kafka_ready)", "ingest"),
                *(Target(f"min({svc}_ready)", svc) for svc in CONSUMERS),
            ),
            kind="stat",
            width=12,
            mappings=(("0", "not ready", "red"), ("1", "ready", "green")),
        ),
    ]


def processor_panels() -> list[Panel]:
    return [
        Panel(
            "End-to-end latency",
            "p50, p95 and p99 of the time from a callback's receipt at the ingest to its MIDI "
            "file being written.",
            quantiles("processor_end_to_end_latency_seconds"),
            unit="s",
        ),
        Panel(
            "Notes kept and dropped",
            "Notes written to MIDI files per second, and notes dropped by reason (invalid "
            "pitch, time or velocity): every drop is counted, never silent.",
            (
                Target(f"sum(rate(processor_notes_total[{RATE}]))", "kept"),
                Target(
                    f"sum by (reason) (rate(processor_notes_dropped_total[{RATE}]))",
                    "dropped {{reason}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Tasks by state",
            "Callbacks processed per second, by task state (complete, failed, unknown).",
            (Target(f"sum by (state) (rate(processor_tasks_total[{RATE}]))", "{{state}}"),),
            unit="ops",
        ),
        Panel(
            "MIDI bytes written",
            "Bytes of MIDI files written per second.",
            (Target(f"sum(rate(processor_midi_written_bytes_total[{RATE}]))", "MIDI"),),
            unit="Bps",
        ),
    ]


def archiver_panels() -> list[Panel]:
    return [
        Panel(
            "Archive bytes written",
            "Bytes of raw callbacks and their sidecars written to storage per second.",
            (Target(f"sum(rate(archiver_written_bytes_total[{RATE}]))", "archive"),),
            unit="Bps",
        ),
        Panel(
            "Archived by outcome",
            "Callbacks archived per second: new, or already there (a redelivery).",
            (Target(f"sum by (outcome) (rate(archiver_archived_total[{RATE}]))", "{{outcome}}"),),
            unit="ops",
        ),
        Panel(
            "Storage errors and replays",
            "Storage operations that failed (retried until they succeed), and records "
            "re-published by the replay command, per interval.",
            (
                Target(
                    f"sum(increase(archiver_storage_errors_total[{RATE}])) or vector(0)",
                    "storage errors",
                ),
                Target(f"sum(increase(archiver_replayed_total[{RATE}]))", "replayed"),
            ),
        ),
    ]


ROWS: tuple[tuple[str, Any], ...] = (
    ("Ingest: rate, errors, duration", ingest_panels),
    ("Consumers: throughput, errors, lag", consumer_panels),
    ("Processor", processor_panels),
    ("Archiver", archiver_panels),
)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": target.expr,
            "legendFormat": target.legend or "__auto",
            "range": True,
            "refId": chr(ord("A") + index),
        }
        for index, target in enumerate(panel.targets)
    ]
    defaults: dict[str, Any] = {"unit": panel.unit}
    options: dict[str, Any]
    if panel.kind == "stat":
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if panel.mappings:
            steps = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
            defaults["mappings"] = [
                {
                    "type": "value",
                    "options": {
                        value: {"text": text, "color": color, "index": index}
                        for index, (value, text, color) in enumerate(panel.mappings)
                    },
                }
            ]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.mappings else "value",
            "graphMode": "none",
            "textMode": "auto",
            "orientation": "auto",
            "justifyMode": "auto",
        }
    else:
        custom: dict[str, Any] = {
            "drawStyle": panel.extra.get("draw", "line"),
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
        }
        if panel.extra.get("stack"):
            custom["stacking"] = {"mode": "normal", "group": "A"}
        defaults["custom"] = custom
        defaults["color"] = {"mode": "palette-classic"}
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "options": options,
        "targets": targets,
        "title": panel.title,
        "type": panel.kind,
    }


def build() -> dict[str, Any]:
    """The dashboard as a dict (Grafana 10/11, schemaVersion 39)."""
    panels: list[dict[str, Any]] = []
    panel_id = 0
    y = 0
    for row_title, make in ROWS:
        panel_id += 1
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": panel_id,
                "panels": [],
                "title": row_title,
                "type": "row",
            }
        )
        y += 1
        x = 0
        row_height = 0
        for panel in make():
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panel_id += 1
            panels.append(_panel_json(panel, panel_id, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "Suno MIDI callbacks: ingest (RED), consumers (throughput, errors, "
        "lag, dead letters), processor (end-to-end latency, notes) and archiver. "
        "Panels and alerts are explained in docs/observability.md.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["suno-midi", "kafka"],
        "templating": {
            "list": [
                {
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "label": "Data source",
                    "multi": False,
                    "name": "datasource",
                    "options": [],
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                    "type": "datasource",
                }
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": "Suno MIDI pipeline",
        "uid": "suno-midi-pipeline",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(
                f"{OUTPUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr
            )
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
