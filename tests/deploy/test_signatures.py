"""Production cannot accept unsigned callbacks: the built manifests, read by the settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.common.errors import ConfigError
from services.common.settings import Settings
from services.ingest.handler import webhook_keys

from .manifests import Build, containers, pod_template


def container(build: Build, deployment: str) -> dict[str, Any]:
    workload = build.get("Deployment", deployment)
    assert workload is not None, deployment
    _, pod = pod_template(workload)
    (found,) = (c for kind, c in containers(pod) if kind == "container")
    return found


def settings_with(build: Build, deployment: str, **secrets: str) -> Settings:
    """The container's settings, each Secret-backed variable given ``secrets``' value."""
    env = build.container_env(container(build, deployment))
    return Settings.from_env(
        {k: secrets.get(k, "stub") if v is None else v for k, v in env.items()}
    )


@pytest.fixture(name="prod")
def fixture_prod(build_overlay: Callable[[str], Build]) -> Build:
    return build_overlay("prod")


class TestProductionFailsClosed:
    def test_the_opt_in_is_explicitly_off(self, prod: Build) -> None:
        """INGEST_ALLOW_UNSIGNED is set, to false, in the ingest's built environment."""
        env = prod.container_env(container(prod, "suno-midi-ingest"))
        assert env.get("INGEST_ALLOW_UNSIGNED") == "false"

    def test_keys_come_from_a_secret(self, prod: Build) -> None:
        """SUNO_WEBHOOK_SECRETS is read from a Secret, never a ConfigMap."""
        ingest = container(prod, "suno-midi-ingest")
        assert prod.secret_ref(ingest, "SUNO_WEBHOOK_SECRETS") is not None

    @pytest.mark.parametrize("blank", ["", "  ", " , "])
    def test_a_blank_secret_stops_the_ingest(self, prod: Build, blank: str) -> None:
        """With the Secret's value blank, the ingest's own rule refuses to start."""
        settings = settings_with(prod, "suno-midi-ingest", SUNO_WEBHOOK_SECRETS=blank)
        with pytest.raises(ConfigError, match="SUNO_WEBHOOK_SECRETS"):
            webhook_keys(settings.ingest)

    def test_a_key_starts_it(self, prod: Build) -> None:
        """The same manifests with a key in the Secret pass the rule (the check can pass)."""
        settings = settings_with(prod, "suno-midi-ingest", SUNO_WEBHOOK_SECRETS="k1")
        assert webhook_keys(settings.ingest) == (b"k1",)

    def test_the_processor_requires_verified_events(self, prod: Build) -> None:
        """PROCESSOR_REQUIRE_VERIFIED is on in the processor's built environment."""
        env = prod.container_env(container(prod, "suno-midi-processor"))
        assert env.get("PROCESSOR_REQUIRE_VERIFIED") == "true"
        assert settings_with(prod, "suno-midi-processor").processor.require_verified
