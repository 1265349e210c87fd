"""The Grafana dashboard: generated, portable, and reading only the metrics we promise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .queries import (
    CONTRACT,
    DASHBOARD,
    ROOT,
    Query,
    dashboard_queries,
    defined_metrics,
    load_dashboard,
    metric_names,
    rule_queries,
    substitute,
)

BUILDER = ROOT / "deploy" / "observability" / "grafana" / "build_dashboard.py"

#: What a user sees, top to bottom: each row's panels as (type, title).
EXPECTED_ROWS = {
    "Ingest: rate, errors, duration": [
        *(
            ("timeseries", title)
            for title in (
                "Callbacks by outcome",
                "Error ratio",
                "Request latency",
                "Publish latency",
                "Publishes in flight",
                "Signature failures",
                "Dedupe hits",
                "Dedupe store",
                "Body size",
            )
        ),
        ("stat", "Time since the last accepted callback"),
    ],
    "Consumers: throughput, errors, lag": [
        *(
            ("timeseries", title)
            for title in (
                "Consumer throughput",
                "Consumer errors",
                "Record processing duration",
                "Consumer lag per partition",
                "Dead letters by reason",
                "Commits failed and rebalances",
            )
        ),
        ("stat", "Readiness"),
    ],
    "Processor": [
        ("timeseries", title)
        for title in (
            "End-to-end latency",
            "Notes kept and dropped",
            "Tasks by state",
            "Callbacks by kind",
            "MIDI bytes written",
        )
    ],
    "Archiver": [
        ("timeseries", title)
        for title in ("Archive bytes written", "Archived by outcome", "Storage errors and replays")
    ],
    "Tracker": [
        ("timeseries", title)
        for title in (
            "Registry tasks by state",
            "Oldest open task",
            "At risk and unknown",
            "Submissions by outcome",
            "Polls by outcome",
            "Recovered by poll",
            "Provider requests by outcome",
            "Provider latency and rate-limit waits",
            "Since the last reconcile round",
        )
    ],
}


class TestDashboard:
    def test_json_is_what_the_builder_writes(self) -> None:
        """The committed JSON is regenerated from build_dashboard.py, not edited by hand."""
        result = subprocess.run(
            [sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr

    def test_schema_and_datasource_variable(self) -> None:
        """schemaVersion 39, and a Prometheus data source variable every panel uses."""
        dashboard = load_dashboard()
        assert dashboard["schemaVersion"] == 39
        assert dashboard["uid"] == "suno-midi-pipeline"
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"

    def test_no_hard_coded_datasource_uid(self) -> None:
        """Every panel and target points at ${datasource}, so the JSON imports anywhere."""
        dashboard = load_dashboard()
        seen = 0
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", target
                seen += 1
        assert seen == len(dashboard_queries()) > 20

    def test_panel_ids_and_positions_are_unique(self) -> None:
        panels = load_dashboard()["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        cells = set()
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
            for dx in range(pos["w"]):
                for dy in range(pos["h"]):
                    cell = (pos["x"] + dx, pos["y"] + dy)
                    assert cell not in cells, f"{panel['title']} overlaps another panel"
                    cells.add(cell)

    def test_every_panel_has_a_description(self) -> None:
        for panel in load_dashboard()["panels"]:
            if panel["type"] != "row":
                assert len(panel.get("description", "")) > 20, panel["title"]

    @pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where)
    def test_query_substitutes_and_reads_contract_metrics(self, query: Query) -> None:
        """Each query expands to plain PromQL and names only metrics from the contract."""
        expr = substitute(query.expr)
        names = metric_names(expr)
        assert names, f"{query} reads no pipeline metric"
        assert names <= CONTRACT, f"{query} reads unknown metrics {sorted(names - CONTRACT)}"

    def test_substitute_refuses_unknown_variables(self) -> None:
        with pytest.raises(ValueError, match="unknown template variables"):
            substitute("rate(x[$nope])")

    def test_every_contract_metric_is_shown_or_alerted_on(self) -> None:
        """No promised metric is left out of both the dashboard and the rules."""
        used: set[str] = set()
        for query in [*dashboard_queries(), *rule_queries()]:
            used |= metric_names(query.expr)
        assert CONTRACT - used == set()

    def test_dashboard_is_valid_json_file(self) -> None:
        """The file parses to the "Suno MIDI pipeline" dashboard: its rows and their panels."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert isinstance(dashboard, dict)
        assert dashboard["uid"] == "suno-midi-pipeline"
        assert dashboard["title"] == "Suno MIDI pipeline"
        rows: dict[str, list[tuple[str, str]]] = {}
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                rows[panel["title"]] = []
            else:
                rows[list(rows)[-1]].append((panel["type"], panel["title"]))
        assert rows == EXPECTED_ROWS


def test_query_helpers_classify_metric_names() -> None:
    """The names a query reads are found through histograms and __name__ regexes."""
    expr = "histogram_quantile(0.5, sum by (le) (rate(ingest_publish_duration_seconds_bucket[1m])))"
    assert metric_names(expr) == {"ingest_publish_duration_seconds"}
    assert metric_names('{__name__=~"(processor|archiver)_ready"}') == {
        "processor_ready",
        "archiver_ready",
    }
    exposition = (
        "# HELP archiver_archived Callback events archived.\n# TYPE archiver_archived counter\n"
    )
    assert "archiver_archived_total" in defined_metrics(exposition)
