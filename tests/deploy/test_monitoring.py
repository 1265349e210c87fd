"""ServiceMonitors reach every service; the rules and dashboard copies match their sources."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from .manifests import K8S_DIR, REPO, Build, pod_template, selector_matches

KNOWN_ENDPOINT_FIELDS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}


def _load_sync_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_monitoring", K8S_DIR / "sync_monitoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


sync = _load_sync_module()

RULES = """\
groups:
  - name: suno-midi-ingest
    rules:
      - alert: SunoMidiIngestDown
        expr: |
          up{job="suno-midi-ingest"} == 0
        for: 5m
        labels:
          severity: page
      - record: suno:ingest_requests:rate5m
        expr: sum(rate(ingest_requests_total[5m]))
"""
DASHBOARD = json.dumps({"title": "Suno MIDI pipeline", "panels": [{"id": 1}]}, indent=2) + "\n"


def _repo_with(tmp_path: Path, *, rules: str | None, dashboard: str | None) -> Path:
    paths = sync.Paths.for_repo(tmp_path)
    paths.rules_target.parent.mkdir(parents=True)
    if rules is not None:
        paths.rules_source.parent.mkdir(parents=True)
        paths.rules_source.write_text(rules)
    if dashboard is not None:
        paths.dashboard_source.parent.mkdir(parents=True)
        paths.dashboard_source.write_text(dashboard)
    return tmp_path


class TestMonitoringObjects:
    def test_every_service_is_scraped(self, build: Build) -> None:
        """A ServiceMonitor selects the Service of each workload, on a port it exposes."""
        monitors = build.of_kind("ServiceMonitor")
        for workload in build.workloads():
            pod_labels = pod_template(workload)[0]["labels"]
            services = [
                service
                for service in build.of_kind("Service")
                if selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
            ]
            assert len(services) == 1, workload["metadata"]["name"]
            service = services[0]
            port_names = {port["name"] for port in service["spec"]["ports"]}
            scraping = [
                monitor
                for monitor in monitors
                if selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
            ]
            assert len(scraping) == 1, service["metadata"]["name"]
            endpoints = scraping[0]["spec"]["endpoints"]
            assert [endpoint["port"] for endpoint in endpoints] == ["http"]
            assert "http" in port_names
            assert all(endpoint.get("path") == "/metrics" for endpoint in endpoints)

    def test_service_monitor_fields(self, build: Build) -> None:
        """Only Prometheus Operator fields, and a scrape timeout below the interval."""
        for monitor in build.of_kind("ServiceMonitor"):
            assert set(monitor["spec"]) <= {
                "selector",
                "endpoints",
                "namespaceSelector",
                "jobLabel",
            }
            for endpoint in monitor["spec"]["endpoints"]:
                assert set(endpoint) <= KNOWN_ENDPOINT_FIELDS
                timeout, interval = (
                    int(endpoint[k].removesuffix("s")) for k in ("scrapeTimeout", "interval")
                )
                assert timeout < interval

    def test_prometheus_selects_rules_and_monitors_alike(self, build: Build) -> None:
        """The PrometheusRule carries the same release label as the ServiceMonitors."""
        releases = {
            obj["metadata"]["labels"].get("release")
            for obj in build.of_kind("ServiceMonitor", "PrometheusRule")
        }
        assert len(build.of_kind("PrometheusRule")) == 1
        assert releases == {"kube-prometheus-stack"}

    def test_dashboard_configmap_is_labelled_for_the_sidecar(self, build: Build) -> None:
        """The Grafana sidecar picks up ConfigMaps labelled grafana_dashboard=1."""
        config_map = build.get("ConfigMap", "suno-midi-grafana-dashboard")
        assert config_map is not None
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


class TestSyncMonitoring:
    def test_generated_files_are_in_sync(self) -> None:
        """The component's copies equal what the observability sources give today."""
        paths = sync.Paths.for_repo(REPO)
        stale = sync.outdated(sync.render_all(paths, root=REPO))
        assert stale == [], f"out of date: {stale}; run {sync.COMMAND}"

    def test_sources_are_copied_when_present(self) -> None:
        """Whenever a source exists, its generated object holds exactly its content."""
        paths = sync.Paths.for_repo(REPO)
        if paths.rules_source.exists():
            rule = yaml.safe_load(paths.rules_target.read_text())
            source = yaml.safe_load(paths.rules_source.read_text())
            assert rule["spec"]["groups"] == source["groups"]
        if paths.dashboard_source.exists():
            config_map = yaml.safe_load(paths.dashboard_target.read_text())
            assert config_map["data"] == {
                paths.dashboard_source.name: paths.dashboard_source.read_text()
            }

    def test_renders_rules_and_dashboard(self, tmp_path: Path) -> None:
        """Rule groups become the PrometheusRule's; the dashboard JSON is kept verbatim."""
        root = _repo_with(tmp_path, rules=RULES, dashboard=DASHBOARD)
        assert sync.main([], root=root) == 0
        paths = sync.Paths.for_repo(root)
        rule = yaml.safe_load(paths.rules_target.read_text())
        assert rule["kind"] == "PrometheusRule"
        assert rule["spec"]["groups"] == yaml.safe_load(RULES)["groups"]
        config_map = yaml.safe_load(paths.dashboard_target.read_text())
        assert config_map["data"] == {"suno-midi-dashboard.json": DASHBOARD}
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"

    def test_placeholders_without_sources(self, tmp_path: Path) -> None:
        """Missing sources give an empty rule object and a ConfigMap without dashboards."""
        root = _repo_with(tmp_path, rules=None, dashboard=None)
        assert sync.main([], root=root) == 0
        paths = sync.Paths.for_repo(root)
        assert yaml.safe_load(paths.rules_target.read_text())["spec"] == {"groups": []}
        assert yaml.safe_load(paths.dashboard_target.read_text())["data"] == {}

    def test_check_reports_stale_copies(self, tmp_path: Path) -> None:
        """--check fails after a source changes and passes once regenerated."""
        root = _repo_with(tmp_path, rules=RULES, dashboard=DASHBOARD)
        assert sync.main([], root=root) == 0
        assert sync.main(["--check"], root=root) == 0
        sync.Paths.for_repo(root).dashboard_source.write_text(DASHBOARD.replace("Suno", "Other"))
        assert sync.main(["--check"], root=root) == 1
        assert sync.main([], root=root) == 0
        assert sync.main(["--check"], root=root) == 0

    @pytest.mark.parametrize(
        ("rules", "dashboard", "message"),
        [
            ("alerts: []\n", None, "groups"),
            ("groups:\n  - rules: []\n", None, "name"),
            (None, "{not json", "not valid JSON"),
        ],
    )
    def test_rejects_malformed_sources(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        rules: str | None,
        dashboard: str | None,
        message: str,
    ) -> None:
        """A malformed source is reported by name and nothing is written."""
        root = _repo_with(tmp_path, rules=rules, dashboard=dashboard)
        assert sync.main([], root=root) == 2
        assert message in capsys.readouterr().err
        assert not sync.Paths.for_repo(root).rules_target.exists()
