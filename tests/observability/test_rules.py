"""The alert rules: valid for promtool, unit-tested with promtool, each with its runbook."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.fixtures.prometheus import find_binary

from .queries import DOCS, EXAMPLE_CONFIG, RULE_TESTS, RULES, load_rules

pytestmark = pytest.mark.prometheus


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("promtool"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES.parent,
        timeout=120,
    )


def _alerts() -> list[dict[str, object]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


class TestRules:
    def test_promtool_check_rules(self) -> None:
        """`promtool check rules` accepts the file (syntax, PromQL, templates)."""
        result = _promtool("check", "rules", str(RULES))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_promtool_unit_tests(self) -> None:
        """`promtool test rules`: every alert fires when it should and stays silent otherwise."""
        result = _promtool("test", "rules", str(RULE_TESTS))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_example_scrape_config_is_valid(self) -> None:
        """The example prometheus.yml (and the rules it loads) pass `promtool check config`."""
        result = _promtool("check", "config", str(EXAMPLE_CONFIG))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_alert_is_unit_tested(self) -> None:
        tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text()))
        assert {str(rule["alert"]) for rule in _alerts()} <= tested

    @pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: str(rule["alert"]))
    def test_alert_has_severity_summary_and_runbook(self, rule: dict[str, object]) -> None:
        """Each alert says how bad, what, why, and links a runbook section that exists."""
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in {"critical", "warning"}
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']} has no {key}"
        anchor = str(annotations["runbook_url"]).split("#", 1)[1]
        assert anchor == f"runbook-{str(rule['alert']).lower()}"
        assert f'<a id="{anchor}"></a>' in DOCS.read_text(encoding="utf-8"), (
            f"docs/observability.md has no runbook anchor {anchor!r}"
        )
