"""Build the Grafana dashboard JSON with Grafana's typed builders (grafana-foundation-sdk).

A dashboard written by hand is thousands of lines where a typo in one query or one JSON key
hides easily; here each panel is a few typed builder calls, and the JSON beside this file is
generated from them::

    .venv/bin/python deploy/observability/grafana/build_dashboard.py          # rewrite the JSON
    .venv/bin/python deploy/observability/grafana/build_dashboard.py --check  # exit 1 if stale

Every query is run against a real Prometheus scraping the pipeline by
tests/observability/test_prometheus.py. After changing the JSON, regenerate the Kubernetes
ConfigMap with ``python deploy/k8s/sync_monitoring.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

try:
    from grafana_foundation_sdk.builders import common as gc
    from grafana_foundation_sdk.builders import dashboard as gd
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.variants import Dataquery
    from grafana_foundation_sdk.models import common, dashboard
except ImportError as exc:  # run outside the project's environment
    sys.exit(f"{exc}: run scripts/bootstrap.sh, then this script with .venv/bin/python")

__all__ = ["OUTPUT", "build", "main", "render"]

OUTPUT = Path(__file__).with_name("suno-midi-dashboard.json")

DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"

#: Outcomes of ingest_requests_total, grouped as the dashboard and the alerts read them.
SERVER_ERRORS = "unavailable|overloaded"
REJECTED = (
    "bad_signature|stale_timestamp|signature_reused|too_large|unsupported_media_type|bad_request"
    "|incomplete_body"
)
SIGNATURE_FAILURES = "bad_signature|stale_timestamp|signature_reused"
CONSUMERS = ("processor", "archiver", "tracker")

Query = tuple[str, str]  # (PromQL, legend)
Panel = timeseries.Panel | stat.Panel


def _targets(queries: Iterable[Query]) -> list[Builder[Dataquery]]:
    """Prometheus range queries on the data source variable, lettered A, B, C..."""
    return [
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend or "__auto")
        .range()
        .ref_id(chr(ord("A") + index))
        .datasource(DATASOURCE)
        for index, (expr, legend) in enumerate(queries)
    ]


def series(
    title: str,
    description: str,
    queries: Iterable[Query],
    unit: str = "short",
    width: int = 8,
    *,
    stack: bool = False,
    bars: bool = False,
) -> timeseries.Panel:
    """A time series in the dashboard's one look: thin lines with a light fill, the legend
    below, and a tooltip listing every series, largest first."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .span(width)
        .height(8)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .color_scheme(gd.FieldColor().mode(dashboard.FieldColorModeId.PALETTE_CLASSIC))
        .legend(
            gc.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            gc.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if stack:
        panel.stacking(gc.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
    return panel


def single_stat(
    title: str,
    description: str,
    queries: Iterable[Query],
    unit: str = "short",
    width: int = 6,
    height: int = 6,
    mappings: dict[str, tuple[str, str]] | None = None,
) -> stat.Panel:
    """A stat panel; with ``mappings`` (value -> (text, colour)) the background says it."""
    steps = [dashboard.Threshold(color="green")]
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .span(width)
        .height(height)
        .color_scheme(gd.FieldColor().mode(dashboard.FieldColorModeId.THRESHOLDS))
        .reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .justify_mode(common.BigValueJustifyMode.AUTO)
    )
    if mappings:
        steps = [dashboard.Threshold(color="red"), dashboard.Threshold(value=1, color="green")]
        options = {
            value: dashboard.ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(mappings.items())
        }
        panel.mappings([dashboard.ValueMap(options)])
        panel.color_mode(common.BigValueColorMode.BACKGROUND)
    return panel.thresholds(
        gd.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps)
    )


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[Query]:
    """p50/p95/p99 of a histogram over the rate interval, optionally split ``by`` a label."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in qs
    ]


def per_consumer(expr: str, legend: str) -> list[Query]:
    """One query per consumer service; ``{svc}`` in ``expr`` and ``legend`` names it."""
    return [(expr.format(svc=svc), legend.format(svc=svc)) for svc in CONSUMERS]


def ingest_panels() -> list[Panel]:
    total = f"sum(rate(ingest_requests_total[{RATE}]))"
    return [
        series(
            "Callbacks by outcome",
            "Requests per second at the callback endpoint, by outcome (accepted, duplicate, "
            "bad_signature, stale_timestamp, signature_reused, too_large, "
            "unsupported_media_type, bad_request, unavailable, overloaded, incomplete_body).",
            [(f"sum by (outcome) (rate(ingest_requests_total[{RATE}]))", "{{outcome}}")],
            "reqps",
            stack=True,
        ),
        series(
            "Error ratio",
            "Share of requests answered 503 (unavailable: Kafka did not acknowledge in time; "
            "overloaded: too many publishes in flight), and share refused as bad input or "
            "bad signature (4xx). The 503 share is what SunoIngestErrorRateHigh alerts on.",
            [
                (
                    f'(sum(rate(ingest_requests_total{{outcome=~"{SERVER_ERRORS}"}}[{RATE}])) '
                    f"or vector(0)) / {total}",
                    "503 (unavailable, overloaded)",
                ),
                (
                    f'(sum(rate(ingest_requests_total{{outcome=~"{REJECTED}"}}[{RATE}])) '
                    f"or vector(0)) / {total}",
                    "4xx (rejected)",
                ),
            ],
            "percentunit",
        ),
        series(
            "Request latency",
            "p50, p95 and p99 of the time from request to answer, every outcome included. "
            "The provider gives up on an attempt after 15 s.",
            quantiles("ingest_request_duration_seconds"),
            "s",
        ),
        series(
            "Publish latency",
            "p50, p95 and p99 of the time Kafka takes to acknowledge an accepted callback "
            "(acks=all). Past INGEST_PUBLISH_TIMEOUT_SECONDS the ingest answers 503.",
            quantiles("ingest_publish_duration_seconds"),
            "s",
        ),
        series(
            "Publishes in flight",
            "Publishes waiting for Kafka's acknowledgement, summed over replicas. Past "
            "INGEST_MAX_IN_FLIGHT per replica, new callbacks get 503 overloaded.",
            [("sum(ingest_publishes_in_flight)", "in flight")],
        ),
        series(
            "Signature failures",
            "Requests refused for their signature, by outcome. A spike means a rotated or wrong "
            "key, a skewed clock or a replay attempt (alert SunoIngestSignatureFailures).",
            [
                (
                    "sum by (outcome) (rate(ingest_requests_total"
                    f'{{outcome=~"{SIGNATURE_FAILURES}"}}[{RATE}]))',
                    "{{outcome}}",
                )
            ],
            "reqps",
        ),
        series(
            "Dedupe hits",
            "Repeated deliveries recognised and answered 200 duplicate without publishing, "
            "per second.",
            [
                (
                    f'sum(rate(ingest_requests_total{{outcome="duplicate"}}[{RATE}]))',
                    "duplicates/s",
                )
            ],
            "reqps",
        ),
        series(
            "Dedupe store",
            "1 when every replica reaches its dedupe store (Redis), and dedupe store errors per "
            "second by operation. While it is down the ingest keeps accepting, but repeats "
            "across replicas reach Kafka again.",
            [
                ("min(ingest_dedupe_backend_up)", "backend up (min over replicas)"),
                (f"sum(rate(ingest_dedupe_errors_total[{RATE}])) or vector(0)", "errors/s"),
            ],
        ),
        series(
            "Body size",
            "p50 and p99 of the size of callback bodies.",
            quantiles("ingest_body_size_bytes", qs=(0.5, 0.99)),
            "bytes",
        ),
        single_stat(
            "Time since the last accepted callback",
            "Seconds since any replica accepted a callback. Alert SunoMidiNoCallbacks fires past "
            "suno_midi:no_callbacks_threshold:seconds.",
            [("time() - max(ingest_last_accepted_timestamp_seconds)", "silence")],
            "s",
        ),
    ]


def consumer_panels() -> list[Panel]:
    return [
        series(
            "Consumer throughput",
            "Records handled per second, by consumer and result (ok, dead_lettered, retried).",
            per_consumer(
                f"sum by (result) (rate({{svc}}_records_total[{RATE}]))", "{svc} {{{{result}}}}"
            ),
            "ops",
        ),
        series(
            "Consumer errors",
            "Records per second that were not handled at the first attempt: retried, or sent "
            "to the dead-letter topic.",
            per_consumer(
                f'sum by (result) (rate({{svc}}_records_total{{{{result!="ok"}}}}[{RATE}]))',
                "{svc} {{{{result}}}}",
            ),
            "ops",
        ),
        series(
            "Record processing duration",
            "p50 and p99 of the time to handle one record until its offset may be committed, "
            "retries included.",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({svc}_record_processing_seconds_bucket[{RATE}])))",
                    f"{svc} p{round(q * 100)}",
                )
                for svc in CONSUMERS
                for q in (0.5, 0.99)
            ],
            "s",
        ),
        series(
            "Consumer lag per partition",
            "High watermark minus the next offset to handle, per partition, as each consumer "
            "computes it. Alerts SunoConsumerLagHigh and SunoConsumerLagGrowing read its sum.",
            per_consumer(
                "sum by (topic, partition) ({svc}_consumer_lag_records)",
                "{svc} {{{{topic}}}}/{{{{partition}}}}",
            ),
            width=12,
        ),
        series(
            "Dead letters by reason",
            "Records sent to the dead-letter topic per interval, by consumer and reason. "
            "Anything here fires SunoMidiDeadLetters.",
            per_consumer(
                f"sum by (reason) (increase({{svc}}_dead_letters_total[{RATE}]))",
                "{svc} {{{{reason}}}}",
            ),
            width=12,
            bars=True,
        ),
        series(
            "Commits failed and rebalances",
            "Offset commits that failed (the record is handled again, idempotently) and "
            "partition rebalances by event, per interval.",
            [
                query
                for svc in CONSUMERS
                for query in (
                    (
                        f"sum(increase({svc}_commit_failures_total[{RATE}]))",
                        f"{svc} commit failures",
                    ),
                    (
                        f"sum by (event) (increase({svc}_rebalances_total[{RATE}]))",
                        f"{svc} {{{{event}}}}",
                    ),
                )
            ],
            width=12,
        ),
        single_stat(
            "Readiness",
            "1 when the service reaches Kafka and its topics exist (what /readyz answers), "
            "minimum over replicas; and whether every tracker replica reaches its registry "
            "(PostgreSQL). Alerts SunoIngestKafkaUnavailable, SunoConsumerNotReady, "
            "SunoTrackerRegistryDown.",
            [
                ("min(ingest_kafka_ready)", "ingest"),
                *per_consumer("min({svc}_ready)", "{svc}"),
                ("min(tracker_registry_up)", "tracker registry"),
            ],
            width=12,
            height=8,
            mappings={"0": ("not ready", "red"), "1": ("ready", "green")},
        ),
    ]


def processor_panels() -> list[Panel]:
    return [
        series(
            "End-to-end latency",
            "p50, p95 and p99 of the time from a callback's receipt at the ingest to its MIDI "
            "file being written.",
            quantiles("processor_end_to_end_latency_seconds"),
            "s",
        ),
        series(
            "Notes kept and dropped",
            "Notes written to MIDI files per second, and notes dropped by reason (invalid "
            "pitch, time or velocity): every drop is counted, never silent.",
            [
                (f"sum(rate(processor_notes_total[{RATE}]))", "kept"),
                (
                    f"sum by (reason) (rate(processor_notes_dropped_total[{RATE}]))",
                    "dropped {{reason}}",
                ),
            ],
            "ops",
        ),
        series(
            "Tasks by state",
            "Callbacks processed per second, by task state (complete, failed, unknown).",
            [(f"sum by (state) (rate(processor_tasks_total[{RATE}]))", "{{state}}")],
            "ops",
        ),
        series(
            "Callbacks by kind",
            "Callbacks accepted per second by the operation that sent them (midi, "
            "music_generation, separation, unknown: users point several operations at one "
            "URL), and those the processor skipped (archived, but no MIDI file, no notes "
            "event).",
            [
                (f"sum by (kind) (rate(ingest_callbacks_by_kind_total[{RATE}]))", "{{kind}}"),
                (
                    f"sum by (kind) (rate(processor_callbacks_skipped_total[{RATE}]))",
                    "skipped {{kind}}",
                ),
            ],
            "ops",
        ),
        series(
            "MIDI bytes written",
            "Bytes of MIDI files written per second.",
            [(f"sum(rate(processor_midi_written_bytes_total[{RATE}]))", "MIDI")],
            "Bps",
        ),
    ]


def archiver_panels() -> list[Panel]:
    return [
        series(
            "Archive bytes written",
            "Bytes of raw callbacks and their sidecars written to storage per second.",
            [(f"sum(rate(archiver_written_bytes_total[{RATE}]))", "archive")],
            "Bps",
        ),
        series(
            "Archived by outcome",
            "Callbacks archived per second: new, or already there (a redelivery).",
            [(f"sum by (outcome) (rate(archiver_archived_total[{RATE}]))", "{{outcome}}")],
            "ops",
        ),
        series(
            "Storage errors and replays",
            "Storage operations that failed (retried until they succeed), and records "
            "re-published by the replay command, per interval.",
            [
                (
                    f"sum(increase(archiver_storage_errors_total[{RATE}])) or vector(0)",
                    "storage errors",
                ),
                (f"sum(increase(archiver_replayed_total[{RATE}]))", "replayed"),
            ],
        ),
    ]


def tracker_panels() -> list[Panel]:
    """The registry's gauges are the same on every replica: ``max`` reads them once."""
    return [
        series(
            "Registry tasks by state",
            "Tasks in the tracker's registry by state: requested and submitted are open; "
            "completed, failed, empty and expired are final.",
            [("max by (state) (tracker_tasks)", "{{state}}")],
        ),
        series(
            "Oldest open task",
            "Age of the oldest task not yet completed, failed, empty or expired. Minutes is "
            "normal (generation takes 30-90 s, polls start after TRACKER_POLL_AFTER_SECONDS); "
            "days mean results that never came.",
            [("max(tracker_oldest_open_task_age_seconds)", "oldest open")],
            "s",
        ),
        series(
            "At risk and unknown",
            "Open tasks within TRACKER_EXPIRY_WARNING_DAYS of the provider's 14-day retention "
            "(SunoTrackerTasksAtRisk), and requests whose submission outcome nobody knows "
            "(SunoTrackerSubmissionsUnknown).",
            [
                ("max(tracker_tasks_at_risk)", "at risk"),
                ("max(tracker_submissions_unknown)", "submission unknown"),
            ],
        ),
        series(
            "Submissions by outcome",
            "Submission attempts per second, by outcome: submitted, not_claimed (another "
            "replica had it), rejected by the provider, unknown, deferred (provider busy).",
            [(f"sum by (outcome) (rate(tracker_submissions_total[{RATE}]))", "{{outcome}}")],
            "ops",
        ),
        series(
            "Polls by outcome",
            "record-info polls per second by what they found: pending, completed, empty, "
            "failed, not_found, error.",
            [(f"sum by (outcome) (rate(tracker_polls_total[{RATE}]))", "{{outcome}}")],
            "ops",
        ),
        series(
            "Recovered by poll",
            "Finished results a poll fetched and sent down the pipeline, per interval: each "
            "is a task whose callback never came.",
            [(f"sum(increase(tracker_recovered_by_poll_total[{RATE}]))", "recovered")],
            bars=True,
        ),
        series(
            "Provider requests by outcome",
            "HTTP requests to the provider per second (each retry counts), by endpoint and "
            "outcome. permanent is never retried (SunoTrackerProviderRefusing).",
            [
                (
                    f"sum by (endpoint, outcome) (rate(tracker_provider_requests_total[{RATE}]))",
                    "{{endpoint}} {{outcome}}",
                )
            ],
            "reqps",
        ),
        series(
            "Provider latency and rate-limit waits",
            "p50 and p99 of one provider request by endpoint, and of the time a request "
            "waited for the rate limit all replicas share (SUNO_API_RATE_LIMIT_REQUESTS per "
            "SUNO_API_RATE_LIMIT_WINDOW_SECONDS).",
            [
                *quantiles("tracker_provider_request_duration_seconds", "endpoint", (0.5, 0.99)),
                *(
                    (expr, f"rate-limit wait {legend}")
                    for expr, legend in quantiles("tracker_rate_limit_wait_seconds", qs=(0.5, 0.99))
                ),
            ],
            "s",
        ),
        series(
            "Since the last reconcile round",
            "Seconds since each replica's reconciler finished a round (polls and expiries). "
            "Past 10 minutes SunoTrackerReconcilerStalled fires.",
            [
                (
                    "time() - max by (instance) (tracker_reconcile_last_round_timestamp_seconds)",
                    "{{instance}}",
                )
            ],
            "s",
        ),
    ]


ROWS: tuple[tuple[str, Callable[[], list[Panel]]], ...] = (
    ("Ingest: rate, errors, duration", ingest_panels),
    ("Consumers: throughput, errors, lag", consumer_panels),
    ("Processor", processor_panels),
    ("Archiver", archiver_panels),
    ("Tracker", tracker_panels),
)


def build() -> dashboard.Dashboard:
    """The dashboard (schemaVersion 39, Grafana 10 or later); rows and panels laid out
    left to right, wrapping at the grid's 24 columns, each panel numbered in order."""
    builder = (
        gd.Dashboard("Suno MIDI pipeline")
        .uid("suno-midi-pipeline")
        .description(
            "Suno MIDI callbacks: ingest (RED), consumers (throughput, errors, lag, dead "
            "letters), processor (end-to-end latency, notes), archiver and tracker (task states, "
            "polls, provider). Panels and alerts "
            "are explained in docs/observability.md."
        )
        .tags(["suno-midi", "kafka"])
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .version(1)
        .with_variable(gd.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .annotation(
            gd.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(dashboard.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
    )
    panel_id = 0
    for title, make in ROWS:
        panel_id += 1
        builder.with_row(gd.Row(title).id(panel_id))
        for panel in make():
            panel_id += 1
            builder.with_panel(panel.id(panel_id))
    model = builder.build()
    model.schema_version = 39  # the SDK stamps its own Grafana's; Grafana migrates up from 39
    return model


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(
                f"{OUTPUT} is out of date: run .venv/bin/python {Path(__file__).as_posix()}",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
