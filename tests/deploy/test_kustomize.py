"""Every overlay builds, lands in its namespace and carries configuration the services accept."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from services.common.settings import ENVIRONMENT, Settings

from .manifests import (
    COMPONENTS_DIR,
    ENSURE_KUSTOMIZE,
    EXTRA_ENV,
    OVERLAYS,
    OVERLAYS_DIR,
    REPO,
    Build,
    containers,
    kustomize_build,
    pod_template,
)

SETTING_NAMES = {name for name, _default, _meaning in ENVIRONMENT}
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|REDIS_URL|ACCESS_KEY|PRIVATE", re.IGNORECASE)
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class TestKustomize:
    def test_overlays_exist(self) -> None:
        """There is a dev and a prod overlay at least."""
        assert {"dev", "prod"} <= set(OVERLAYS)

    def test_every_component_is_used(self) -> None:
        """A component no overlay includes would never be built or checked."""
        used = set()
        for overlay in OVERLAYS:
            text = (OVERLAYS_DIR / overlay / "kustomization.yaml").read_text()
            used |= set(re.findall(r"\.\./\.\./components/([\w-]+)", text))
        components = {path.name for path in COMPONENTS_DIR.iterdir() if path.is_dir()}
        assert components - used == set()

    def test_prod_includes_every_component(self) -> None:
        """Production runs with network policies, monitoring and Kafka TLS."""
        text = (OVERLAYS_DIR / "prod" / "kustomization.yaml").read_text()
        for component in ("network-policies", "monitoring", "kafka-tls"):
            assert f"../../components/{component}" in text

    def test_builds(self, build: Build) -> None:
        """The overlay builds and yields the five workloads."""
        names = {workload["metadata"]["name"] for workload in build.workloads()}
        assert names == {
            "suno-midi-ingest",
            "suno-midi-processor",
            "suno-midi-archiver",
            "suno-midi-tracker",
            "suno-midi-console",
        }

    def test_a_broken_kustomization_fails_the_build(self, kustomize: Path, tmp_path: Path) -> None:
        """The build helper surfaces kustomize's error instead of returning nothing."""
        (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
        with pytest.raises(AssertionError, match=r"missing\.yaml"):
            kustomize_build(kustomize, tmp_path)

    def test_no_duplicate_objects(self, build: Build) -> None:
        """No two objects share kind and name."""
        counts = Counter((obj["kind"], obj["metadata"]["name"]) for obj in build.objects)
        assert [key for key, count in counts.items() if count > 1] == []

    def test_one_namespace(self, build: Build) -> None:
        """Every namespaced object lands in the overlay's namespace, which the overlay creates."""
        namespaces = build.of_kind("Namespace")
        assert len(namespaces) == 1
        namespace = namespaces[0]["metadata"]["name"]
        stray = [
            f"{obj['kind']}/{obj['metadata']['name']}"
            for obj in build.objects
            if obj["kind"] not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != namespace
        ]
        assert stray == []

    def test_namespace_enforces_restricted_pod_security(self, build: Build) -> None:
        """The API server itself rejects pods that break the restricted standard."""
        labels = build.of_kind("Namespace")[0]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    def test_no_secret_values(self, build: Build) -> None:
        """No Secret is built from the repository, and no ConfigMap holds a credential."""
        assert build.of_kind("Secret") == []
        leaks = [
            f"{config_map['metadata']['name']}: {key}"
            for config_map in build.of_kind("ConfigMap")
            for key in config_map.get("data", {})
            if SECRET_LOOKING.search(key)
        ]
        assert leaks == []

    def test_credentials_come_from_secrets(self, build: Build) -> None:
        """Each credential variable a container gets is a secretKeyRef."""
        for workload in build.workloads():
            _, pod = pod_template(workload)
            for _, container in containers(pod):
                for var in container.get("env", []):
                    if SECRET_LOOKING.search(var["name"]):
                        assert "secretKeyRef" in var.get("valueFrom", {}), var["name"]

    def test_environment_names_are_settings(self, build: Build) -> None:
        """Every variable a service container gets is one the Settings object reads."""
        unknown = set()
        for workload in build.workloads():
            _, pod = pod_template(workload)
            for _, container in containers(pod):
                unknown |= set(build.container_env(container)) - SETTING_NAMES - EXTRA_ENV
        assert unknown == set()

    def test_configuration_is_accepted_by_settings(self, build: Build) -> None:
        """Each container's environment (secrets stubbed) passes Settings.from_env."""
        for workload in build.workloads():
            _, pod = pod_template(workload)
            for _, container in containers(pod):
                env = {
                    k: ("stub" if v is None else v)
                    for k, v in build.container_env(container).items()
                }
                settings = Settings.from_env(env)
                assert settings.kafka.create_topics is False
                assert settings.log.format == "json"

    def test_ensure_kustomize_is_idempotent(self, kustomize: Path) -> None:
        """A second run reuses the cached binary: same path, nothing rebuilt."""
        result = subprocess.run(
            ["bash", str(ENSURE_KUSTOMIZE)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            timeout=60,
        )
        assert Path(result.stdout.strip()) == kustomize
        assert "building" not in result.stderr
        assert REPO not in kustomize.parents
