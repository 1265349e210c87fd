"""Autoscaling and disruption budgets: ingest by CPU, consumers by lag, capped by partitions."""

from __future__ import annotations

from typing import Any

from .manifests import Build, pod_template, selector_matches

KNOWN_TRIGGER_METADATA = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "sasl",
    "tls",
}
KNOWN_SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
KNOWN_AUTH_PARAMETERS = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
#: Deployments with a fixed replica count instead of an autoscaler: the tracker's work is
#: bounded by the provider's rate limit, not by its CPU or a lag; two replicas keep it
#: running through a node loss or a rollout. The console serves a handful of readers.
FIXED_REPLICAS = {"suno-midi-tracker": 2, "suno-midi-console": 2}
SASL_NAMES = {
    "SCRAM-SHA-512": "scram_sha512",
    "SCRAM-SHA-256": "scram_sha256",
    "PLAIN": "plaintext",
}


def _targets(build: Build) -> dict[str, list[str]]:
    """Deployment name -> the autoscalers (kind/name) that scale it."""
    targets: dict[str, list[str]] = {}
    for hpa in build.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        targets.setdefault(ref["name"], []).append(f"HPA/{hpa['metadata']['name']}")
    for scaled in build.of_kind("ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        assert ref.get("kind", "Deployment") == "Deployment"
        targets.setdefault(ref["name"], []).append(f"ScaledObject/{scaled['metadata']['name']}")
    return targets


def _container_env(build: Build, deployment_name: str) -> dict[str, str | None]:
    deployment = build.get("Deployment", deployment_name)
    assert deployment is not None, f"no Deployment {deployment_name}"
    return build.container_env(pod_template(deployment)[1]["containers"][0])


def _partitions(build: Build, topic: str) -> int:
    for kafka_topic in build.of_kind("KafkaTopic"):
        if kafka_topic["spec"].get("topicName", kafka_topic["metadata"]["name"]) == topic:
            return int(kafka_topic["spec"]["partitions"])
    raise AssertionError(f"no KafkaTopic for {topic}")


class TestAutoscaling:
    def test_every_deployment_has_one_autoscaler(self, build: Build) -> None:
        """Exactly one HPA or ScaledObject per Deployment not of a fixed count, and none
        targets a missing one."""
        targets = _targets(build)
        names = {deployment["metadata"]["name"] for deployment in build.of_kind("Deployment")}
        assert set(targets) == names - set(FIXED_REPLICAS)
        assert all(len(scalers) == 1 for scalers in targets.values()), targets

    def test_autoscaled_deployments_leave_replicas_unset(self, build: Build) -> None:
        """An apply must not reset the replica count the autoscaler chose."""
        assert [
            d["metadata"]["name"]
            for d in build.of_kind("Deployment")
            if "replicas" in d["spec"] and d["metadata"]["name"] not in FIXED_REPLICAS
        ] == []

    def test_fixed_deployments_state_their_count(self, build: Build) -> None:
        """A Deployment without an autoscaler runs its stated count, at least two."""
        for name, replicas in FIXED_REPLICAS.items():
            deployment = build.get("Deployment", name)
            assert deployment is not None, name
            assert deployment["spec"].get("replicas") == replicas >= 2, name

    def test_ingest_hpa(self, build: Build) -> None:
        """The ingest keeps at least two replicas and scales on CPU."""
        hpa = build.get("HorizontalPodAutoscaler", "suno-midi-ingest")
        assert hpa is not None
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "suno-midi-ingest",
        }
        assert spec["minReplicas"] >= 2
        assert spec["maxReplicas"] > spec["minReplicas"]
        assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]

    def test_consumers_scale_on_lag(self, build: Build) -> None:
        """Processor and archiver each have a kafka-triggered ScaledObject."""
        for name in ("suno-midi-processor", "suno-midi-archiver"):
            scaled = build.get("ScaledObject", name)
            assert scaled is not None, name
            assert scaled["spec"]["scaleTargetRef"]["name"] == name
            assert [trigger["type"] for trigger in scaled["spec"]["triggers"]] == ["kafka"]

    def test_scaled_object_fields(self, build: Build) -> None:
        """Only fields KEDA knows, bounded replica counts, and idle consumers not allowed."""
        for scaled in build.of_kind("ScaledObject"):
            spec = scaled["spec"]
            assert set(spec) <= KNOWN_SCALED_OBJECT_SPEC
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
            for trigger in spec["triggers"]:
                metadata = trigger["metadata"]
                assert set(metadata) <= KNOWN_TRIGGER_METADATA
                assert all(isinstance(value, str) for value in metadata.values())
                assert int(metadata["lagThreshold"]) > 0
                assert metadata.get("allowIdleConsumers", "false") == "false"
                assert metadata["offsetResetPolicy"] == "earliest"

    def test_max_replicas_within_partitions(self, build: Build) -> None:
        """More consumers than partitions would sit idle: the cap is the partition count."""
        for scaled in build.of_kind("ScaledObject"):
            topic = scaled["spec"]["triggers"][0]["metadata"]["topic"]
            assert scaled["spec"]["maxReplicaCount"] <= _partitions(build, topic)

    def test_trigger_matches_the_consumer(self, build: Build) -> None:
        """KEDA watches the group, topic and brokers the scaled consumer actually uses."""
        group_vars = {
            "suno-midi-processor": "PROCESSOR_GROUP_ID",
            "suno-midi-archiver": "ARCHIVER_GROUP_ID",
        }
        for scaled in build.of_kind("ScaledObject"):
            target = scaled["spec"]["scaleTargetRef"]["name"]
            env = _container_env(build, target)
            metadata = scaled["spec"]["triggers"][0]["metadata"]
            assert metadata["consumerGroup"] == env[group_vars[target]]
            assert metadata["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
            assert metadata["topic"] == "suno.midi.callbacks.v1"
            assert metadata["sasl"] == SASL_NAMES[str(env["KAFKA_SASL_MECHANISM"])]
            uses_tls = env["KAFKA_SECURITY_PROTOCOL"] in ("SSL", "SASL_SSL")
            assert (metadata.get("tls") == "enable") is uses_tls

    def test_trigger_authentication(self, build: Build) -> None:
        """KEDA logs in as a Strimzi KafkaUser of its own, with the CA when TLS is on."""
        for scaled in build.of_kind("ScaledObject"):
            trigger = scaled["spec"]["triggers"][0]
            auth = build.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
            assert auth is not None
            assert set(auth["spec"]) <= {"secretTargetRef", "configMapTargetRef"}
            refs: dict[str, dict[str, Any]] = {
                ref["parameter"]: {**ref, "kind": kind}
                for kind, key in (
                    ("Secret", "secretTargetRef"),
                    ("ConfigMap", "configMapTargetRef"),
                )
                for ref in auth["spec"].get(key, [])
            }
            assert set(refs) <= KNOWN_AUTH_PARAMETERS
            username = refs["username"]
            assert username["kind"] == "ConfigMap"
            config_map = build.get("ConfigMap", username["name"])
            assert config_map is not None, "the username ConfigMap must keep its unhashed name"
            user = config_map["data"][username["key"]]
            assert build.get("KafkaUser", user) is not None
            # Strimzi stores the generated password in a Secret named like the user.
            assert (refs["password"]["kind"], refs["password"]["name"]) == ("Secret", user)
            assert refs["password"]["key"] == "password"
            if trigger["metadata"].get("tls") == "enable":
                assert refs["ca"]["kind"] == "Secret"
                assert refs["ca"]["key"] == "ca.crt"


class TestDisruptionBudgets:
    def test_every_workload_has_a_budget(self, build: Build) -> None:
        """A PodDisruptionBudget selects each workload's pods and lets one go at a time."""
        budgets = build.of_kind("PodDisruptionBudget")
        for workload in build.workloads():
            labels = pod_template(workload)[0]["labels"]
            matching = [b for b in budgets if selector_matches(b["spec"]["selector"], labels)]
            assert len(matching) == 1, workload["metadata"]["name"]
            assert matching[0]["spec"].get("maxUnavailable") == 1

    def test_ingest_budget_keeps_one_serving(self, build: Build) -> None:
        """With the HPA's minimum of replicas, a drain still leaves the ingest serving."""
        hpa = build.get("HorizontalPodAutoscaler", "suno-midi-ingest")
        budget = build.get("PodDisruptionBudget", "suno-midi-ingest")
        assert hpa is not None and budget is not None
        assert hpa["spec"]["minReplicas"] - budget["spec"]["maxUnavailable"] >= 1
