"""The tracker's manifests: its secrets fail closed, its callback URL is the ingest's, and
the optional CloudNativePG registry is wired as its DATABASE_URL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from services.common.errors import ConfigError
from services.ingest.app import CALLBACK_PATH
from services.tracker.app import check_settings

from .manifests import Build
from .test_signatures import container, settings_with

TRACKER = "suno-midi-tracker"
#: Variables the tracker reads from Secrets, and the Secret each comes from in the base.
SECRETS = {
    "DATABASE_URL": ("suno-midi-tracker-db", "url"),
    "SUNO_API_KEY": ("suno-midi-suno-api", "api-key"),
    "TRACKER_API_TOKENS": ("suno-midi-tracker-api", "tokens"),
}
#: CloudNativePG's Secret for a cluster's application user is "<cluster>-app", key "uri".
CNPG_APP_SECRET = ("suno-midi-registry-app", "uri")


@pytest.fixture(name="prod")
def fixture_prod(build_overlay: Callable[[str], Build]) -> Build:
    return build_overlay("prod")


class TestTrackerSecrets:
    def test_prod_reads_credentials_from_existing_secrets(self, prod: Build) -> None:
        """Production takes the registry URL, API key and tokens from Secrets it does not
        build (the operator creates them), never from a ConfigMap."""
        tracker = container(prod, TRACKER)
        for name, ref in SECRETS.items():
            assert prod.secret_ref(tracker, name) == ref, name
        assert prod.of_kind("Secret") == []

    @pytest.mark.parametrize("variable", ["DATABASE_URL", "SUNO_API_KEY"])
    @pytest.mark.parametrize("blank", ["", "  "])
    def test_a_blank_secret_stops_the_tracker(self, prod: Build, variable: str, blank: str) -> None:
        """With a blank Secret value the tracker's own start-up check refuses to run."""
        settings = settings_with(prod, TRACKER, **{variable: blank})
        with pytest.raises(ConfigError, match=variable):
            check_settings(settings.tracker)

    def test_filled_secrets_start_it(self, prod: Build) -> None:
        """The same manifests with values in the Secrets pass the check (it can pass)."""
        settings = settings_with(prod, TRACKER, DATABASE_URL="postgresql://u:p@db:5432/app")
        check_settings(settings.tracker)
        assert settings.tracker.rate_limit_requests == 20


class TestTrackerConfiguration:
    def test_callback_url_is_the_ingress_route(self, build: Build) -> None:
        """The provider is told to call back where the Ingress routes to the ingest."""
        settings = settings_with(build, TRACKER)
        assert settings.tracker.callback_url is not None
        url = urlsplit(settings.tracker.callback_url)
        ingress = build.get("Ingress", "suno-midi-ingest")
        assert ingress is not None
        rule = ingress["spec"]["rules"][0]
        assert url.scheme == "https"
        assert url.hostname == rule["host"]
        assert url.path == CALLBACK_PATH == rule["http"]["paths"][0]["path"]
        assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]

    def test_api_base_url_is_https(self, build: Build) -> None:
        """Provider calls carry the API key: HTTPS only (the egress policy allows 443)."""
        settings = settings_with(build, TRACKER)
        assert urlsplit(settings.tracker.api_base_url).scheme == "https"


class TestCloudNativePg:
    def test_dev_registry_is_the_cnpg_cluster(self, build_overlay: Callable[[str], Build]) -> None:
        """With the component, DATABASE_URL is the app Secret CloudNativePG makes for the
        Cluster the component adds."""
        dev = build_overlay("dev")
        clusters = dev.of_kind("Cluster")
        assert [c["metadata"]["name"] for c in clusters] == ["suno-midi-registry"]
        cluster = clusters[0]
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        assert f"{cluster['metadata']['name']}-app" == CNPG_APP_SECRET[0]
        assert dev.secret_ref(container(dev, TRACKER), "DATABASE_URL") == CNPG_APP_SECRET
        assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}

    def test_prod_has_no_cnpg_cluster(self, prod: Build) -> None:
        """The component is opt-in: production uses the database its Secret names."""
        assert prod.of_kind("Cluster") == []

    def test_registry_instances_accept_the_tracker(
        self, build_overlay: Callable[[str], Build]
    ) -> None:
        """Behind the namespace's default deny, the tracker still reaches the registry."""
        policy = build_overlay("dev").get("NetworkPolicy", "suno-midi-registry")
        assert policy is not None
        sql = [
            rule
            for rule in policy["spec"]["ingress"]
            if {"protocol": "TCP", "port": 5432} in rule["ports"]
        ]
        peers = [peer.get("podSelector", {}).get("matchLabels") for r in sql for peer in r["from"]]
        assert {"app.kubernetes.io/name": TRACKER} in peers
