"""The console's manifests: it reads the tracker's registry through the tracker's own
Secret (or the CloudNativePG cluster's), the storage the consumers write, Prometheus for
its health strip, and is reachable inside the cluster only. Its Kafka user, settings and
CA are checked with every other client's in test_kafka."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.console.health import Prometheus, source_of

from .manifests import Build
from .test_signatures import container, settings_with
from .test_tracker import CNPG_APP_SECRET, SECRETS

CONSOLE = "suno-midi-console"
TRACKER = "suno-midi-tracker"


@pytest.fixture(name="prod")
def fixture_prod(build_overlay: Callable[[str], Build]) -> Build:
    return build_overlay("prod")


class TestConsoleManifests:
    def test_registry_url_is_the_trackers(self, build: Build) -> None:
        """The console reads DATABASE_URL from wherever the tracker does, in every overlay
        (the tracker's Secret, or the CloudNativePG app Secret in dev)."""
        console_ref = build.secret_ref(container(build, CONSOLE), "DATABASE_URL")
        assert console_ref == build.secret_ref(container(build, TRACKER), "DATABASE_URL")
        expected = CNPG_APP_SECRET if build.of_kind("Cluster") else SECRETS["DATABASE_URL"]
        assert console_ref == expected

    def test_storage_is_the_consumers(self, build: Build) -> None:
        """Same storage settings and credentials as the processor, which writes the files."""
        console = settings_with(build, CONSOLE).storage
        assert console == settings_with(build, "suno-midi-processor").storage
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            processor = container(build, "suno-midi-processor")
            assert build.secret_ref(container(build, CONSOLE), variable) == build.secret_ref(
                processor, variable
            )

    def test_health_reads_prometheus(self, build: Build) -> None:
        """In a cluster the strip reads Prometheus (a Service would show one replica)."""
        settings = settings_with(build, CONSOLE).console
        source = source_of(
            settings.metrics_urls, settings.prometheus_url, settings.health_timeout_seconds
        )
        assert isinstance(source, Prometheus)
        assert source.url.startswith("http://") and source.url.endswith(".svc:9090")

    def test_reachable_inside_the_cluster_only(self, build: Build) -> None:
        """A ClusterIP Service, and no Ingress routes to it."""
        service = build.get("Service", CONSOLE)
        assert service is not None
        assert service["spec"]["type"] == "ClusterIP"
        backends = {
            path["backend"]["service"]["name"]
            for ingress in build.of_kind("Ingress")
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        }
        assert CONSOLE not in backends

    def test_registry_instances_accept_the_console(
        self, build_overlay: Callable[[str], Build]
    ) -> None:
        """Behind the default deny, the console reaches the in-cluster registry too."""
        policy = build_overlay("dev").get("NetworkPolicy", "suno-midi-registry")
        assert policy is not None
        peers = [
            peer.get("podSelector", {}).get("matchLabels")
            for rule in policy["spec"]["ingress"]
            if {"protocol": "TCP", "port": 5432} in rule["ports"]
            for peer in rule["from"]
        ]
        assert {"app.kubernetes.io/name": CONSOLE} in peers

    def test_prod_secrets_are_not_built(self, prod: Build) -> None:
        """Its credentials come from Secrets the operator creates, never from a ConfigMap."""
        console = container(prod, CONSOLE)
        assert prod.secret_ref(console, "DATABASE_URL") == SECRETS["DATABASE_URL"]
        assert prod.of_kind("Secret") == []
