"""Copy the observability sources into the kustomize ``monitoring`` component.

Kustomize's default load restrictor forbids reading files outside a kustomization root, so
the PrometheusRule and the Grafana dashboard ConfigMap in
``deploy/k8s/components/monitoring/`` are generated from the files under
``deploy/observability/``. Run this after changing those sources::

    python deploy/k8s/sync_monitoring.py           # rewrite the generated files
    python deploy/k8s/sync_monitoring.py --check   # exit 1 if they are out of date

While a source does not exist yet, its generated file is a harmless placeholder (a rule
object without groups, a dashboard ConfigMap without dashboards), so every overlay builds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Paths",
    "SyncError",
    "main",
    "outdated",
    "render_all",
    "render_dashboard",
    "render_rules",
]

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python deploy/k8s/sync_monitoring.py"

#: Labels every generated object carries. ``release`` is what kube-prometheus-stack's
#: Prometheus selects rules by; ``grafana_dashboard`` is what its Grafana sidecar watches.
COMMON_LABELS = {
    "app.kubernetes.io/part-of": "suno-midi",
    "app.kubernetes.io/managed-by": "kustomize",
}
RULE_LABELS = {**COMMON_LABELS, "release": "kube-prometheus-stack"}
DASHBOARD_LABELS = {**COMMON_LABELS, "grafana_dashboard": "1"}

#: A ConfigMap holds at most 1 MiB; leave room for its envelope.
MAX_DASHBOARD_BYTES = 900 * 1024


class SyncError(Exception):
    """A source file exists but cannot be turned into its Kubernetes object."""


@dataclass(frozen=True, slots=True)
class Paths:
    rules_source: Path
    dashboard_source: Path
    rules_target: Path
    dashboard_target: Path

    @classmethod
    def for_repo(cls, root: Path) -> Paths:
        component = root / "deploy" / "k8s" / "components" / "monitoring"
        observability = root / "deploy" / "observability"
        return cls(
            rules_source=observability / "prometheus" / "suno-midi.rules.yml",
            dashboard_source=observability / "grafana" / "suno-midi-dashboard.json",
            rules_target=component / "prometheusrule.yaml",
            dashboard_target=component / "grafana-dashboard-configmap.yaml",
        )


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no type stubs
    """Block style for multi-line strings (PromQL, the dashboard JSON), so diffs stay readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(header: str, document: dict[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + str(body)


def _header(source: Path, root: Path) -> str:
    try:
        shown = source.relative_to(root)
    except ValueError:
        shown = source
    return f"# Generated from {shown} by {COMMAND}. Do not edit.\n"


def render_rules(source: Path, *, root: Path = REPO) -> str:
    """The PrometheusRule for the Prometheus rules file ``source`` (a placeholder if absent)."""
    header = _header(source, root)
    if not source.exists():
        header += "# The source does not exist yet: this rule object has no groups.\n"
        groups: list[Any] = []
    else:
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SyncError(f"{source} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("groups"), list):
            raise SyncError(f"{source} must be a Prometheus rules file with a 'groups' list")
        groups = loaded["groups"]
        for index, group in enumerate(groups):
            if not isinstance(group, dict) or "name" not in group:
                raise SyncError(f"{source}: group {index} has no 'name'")
            if not isinstance(group.get("rules"), list):
                raise SyncError(f"{source}: group {group['name']!r} has no 'rules' list")
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "suno-midi", "labels": dict(RULE_LABELS)},
        "spec": {"groups": groups},
    }
    return _dump(header, document)


def render_dashboard(source: Path, *, root: Path = REPO) -> str:
    """The ConfigMap for the Grafana sidecar holding ``source`` (a placeholder if absent)."""
    header = _header(source, root)
    data: dict[str, str] = {}
    if not source.exists():
        header += "# The source does not exist yet: this ConfigMap holds no dashboard.\n"
    else:
        text = source.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise SyncError(f"{source} is not valid JSON: {exc}") from exc
        size = len(text.encode("utf-8"))
        if size > MAX_DASHBOARD_BYTES:
            raise SyncError(
                f"{source} is {size} bytes; a ConfigMap holds at most 1 MiB, so keep the "
                f"dashboard under {MAX_DASHBOARD_BYTES} bytes"
            )
        data[source.name] = text
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "suno-midi-grafana-dashboard",
            "labels": dict(DASHBOARD_LABELS),
            "annotations": {"grafana_folder": "Suno MIDI"},
        },
        "data": data,
    }
    return _dump(header, document)


def render_all(paths: Paths, *, root: Path = REPO) -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    return {
        paths.rules_target: render_rules(paths.rules_source, root=root),
        paths.dashboard_target: render_dashboard(paths.dashboard_source, root=root),
    }


def outdated(rendered: dict[Path, str]) -> list[Path]:
    """The generated files whose content differs from what the sources give."""
    return [
        target
        for target, text in rendered.items()
        if not target.exists() or target.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None, *, root: Path = REPO) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    paths = Paths.for_repo(root)
    try:
        rendered = render_all(paths, root=root)
    except SyncError as exc:
        print(f"sync_monitoring: {exc}", file=sys.stderr)
        return 2
    stale = outdated(rendered)
    if args.check:
        for target in stale:
            print(f"sync_monitoring: {target} is out of date; run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for target in stale:
        target.write_text(rendered[target], encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
