"""Strimzi topics match what the services declare; each client gets least-privilege ACLs."""

from __future__ import annotations

from typing import Any

from services.common.kafka import topic_specs
from services.common.settings import KafkaSettings, TopicNames

from .manifests import Build, pod_template

TOPICS = TopicNames()
ACL_OPERATIONS = {
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "AlterConfigs",
    "DescribeConfigs",
    "IdempotentWrite",
    "All",
}
Grant = tuple[str, str, str]  # (resource type, resource name, operation)


def _shared_setting(build: Build, name: str) -> str:
    """A Kafka setting every service's ConfigMap must agree on."""
    values = {
        config_map["data"][name]
        for config_map in build.of_kind("ConfigMap")
        if name in config_map.get("data", {})
    }
    assert len(values) == 1, f"{name} differs between services: {values}"
    return str(values.pop())


def _service_env(build: Build, name: str) -> dict[str, str | None]:
    deployment = build.get("Deployment", name)
    assert deployment is not None
    return build.container_env(pod_template(deployment)[1]["containers"][0])


def _grants(user: dict[str, Any]) -> set[Grant]:
    grants = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert acl.get("type", "allow") == "allow"
        assert resource.get("patternType", "literal") == "literal", "no prefix grants"
        assert acl.get("host", "*") == "*"
        for operation in acl["operations"]:
            grants.add((resource["type"], resource.get("name", "kafka-cluster"), operation))
    return grants


def _expected_grants(build: Build) -> dict[str, set[Grant]]:
    processor_group = _service_env(build, "suno-midi-processor")["PROCESSOR_GROUP_ID"]
    archiver_group = _service_env(build, "suno-midi-archiver")["ARCHIVER_GROUP_ID"]
    tracker_group = _service_env(build, "suno-midi-tracker")["TRACKER_GROUP_ID"]
    console_group = _service_env(build, "suno-midi-console")["CONSOLE_DLQ_GROUP_ID"]
    assert processor_group and archiver_group and tracker_group and console_group
    idempotent = {("cluster", "kafka-cluster", "IdempotentWrite")}

    def topic(name: str, *operations: str) -> set[Grant]:
        return {("topic", name, operation) for operation in operations}

    return {
        # DescribeConfigs: each service checks its topics' max.message.bytes at start-up.
        "suno-midi-ingest": topic(TOPICS.callbacks, "Describe", "DescribeConfigs", "Write")
        | idempotent,
        "suno-midi-processor": topic(TOPICS.callbacks, "Describe", "DescribeConfigs", "Read")
        | {("group", processor_group, "Read")}
        | topic(TOPICS.notes, "Describe", "DescribeConfigs", "Write")
        | topic(TOPICS.dlq, "Describe", "DescribeConfigs", "Write")
        | idempotent,
        # Write on callbacks: the replay CLI republishes archived callbacks.
        "suno-midi-archiver": topic(
            TOPICS.callbacks, "Describe", "DescribeConfigs", "Read", "Write"
        )
        | {("group", archiver_group, "Read")}
        | topic(TOPICS.dlq, "Describe", "DescribeConfigs", "Write")
        | idempotent,
        # Reads what moves a task's state; writes requests (its API and CLI), poll results
        # (as callbacks) and dead letters.
        "suno-midi-tracker": topic(TOPICS.requests, "Describe", "DescribeConfigs", "Read", "Write")
        | topic(TOPICS.callbacks, "Describe", "DescribeConfigs", "Read", "Write")
        | topic(TOPICS.notes, "Describe", "DescribeConfigs", "Read")
        | {("group", tracker_group, "Read")}
        | topic(TOPICS.dlq, "Describe", "DescribeConfigs", "Write")
        | idempotent,
        # Replay publishes callbacks (checking no topic first); the dead-letter indexer reads
        # the DLQ with its own group, checking that topic at start.
        "suno-midi-console": topic(TOPICS.callbacks, "Describe", "Write")
        | topic(TOPICS.dlq, "Describe", "DescribeConfigs", "Read")
        | {("group", console_group, "Read")}
        | idempotent,
        "suno-midi-keda": topic(TOPICS.callbacks, "Describe")
        | {("group", processor_group, "Describe"), ("group", archiver_group, "Describe")},
    }


class TestTopics:
    def test_topics_match_the_services_declaration(self, build: Build) -> None:
        """Partitions, replication and config equal services.common.kafka.topic_specs."""
        declared = topic_specs(
            KafkaSettings(
                partitions=int(_shared_setting(build, "KAFKA_TOPIC_PARTITIONS")),
                replication_factor=int(_shared_setting(build, "KAFKA_REPLICATION_FACTOR")),
                max_message_bytes=int(_shared_setting(build, "KAFKA_MAX_MESSAGE_BYTES")),
            )
        )
        built = {
            topic["spec"].get("topicName", topic["metadata"]["name"]): topic["spec"]
            for topic in build.of_kind("KafkaTopic")
        }
        assert set(built) == {spec.name for spec in declared}
        for spec in declared:
            actual = built[spec.name]
            assert set(actual) <= {"topicName", "partitions", "replicas", "config"}
            assert actual["partitions"] == spec.partitions, spec.name
            assert actual["replicas"] == spec.replication_factor, spec.name
            config = {key: str(value) for key, value in actual["config"].items()}
            assert config == spec.config, spec.name

    def test_topic_defaults(self, build: Build) -> None:
        """The contract's numbers: 6 partitions, 16 MiB records, zstd, 7/7/30/7 days."""
        day_ms = 24 * 3600 * 1000
        retention = {
            TOPICS.callbacks: 7 * day_ms,
            TOPICS.notes: 7 * day_ms,
            TOPICS.dlq: 30 * day_ms,
            TOPICS.requests: 7 * day_ms,
        }
        for topic in build.of_kind("KafkaTopic"):
            spec = topic["spec"]
            assert spec["partitions"] == 6
            assert spec["config"]["max.message.bytes"] == "16777216"
            assert spec["config"]["compression.type"] == "zstd"
            assert int(spec["config"]["retention.ms"]) == retention[spec["topicName"]]

    def test_prod_replicates_three_ways(self, build_overlay: Any) -> None:
        """Production topics survive a broker loss with acks=all still accepted."""
        for topic in build_overlay("prod").of_kind("KafkaTopic"):
            assert topic["spec"]["replicas"] == 3
            assert topic["spec"]["config"]["min.insync.replicas"] == "2"

    def test_services_do_not_create_topics(self, build: Build) -> None:
        """Strimzi owns the topics."""
        assert _shared_setting(build, "KAFKA_CREATE_TOPICS") == "false"

    def test_one_strimzi_cluster(self, build: Build) -> None:
        """Topics and users name the cluster the bootstrap address belongs to."""
        clusters = {
            obj["metadata"]["labels"]["strimzi.io/cluster"]
            for obj in build.of_kind("KafkaTopic", "KafkaUser")
        }
        assert len(clusters) == 1
        bootstrap = _shared_setting(build, "KAFKA_BOOTSTRAP_SERVERS")
        assert bootstrap.startswith(f"{clusters.pop()}-kafka-bootstrap.")


class TestUsers:
    def test_users_have_exactly_the_grants_they_need(self, build: Build) -> None:
        """Each KafkaUser's ACLs equal the least-privilege set, no more, no less."""
        users = {user["metadata"]["name"]: user for user in build.of_kind("KafkaUser")}
        expected = _expected_grants(build)
        assert set(users) == set(expected)
        for name, user in users.items():
            assert _grants(user) == expected[name], name

    def test_user_fields(self, build: Build) -> None:
        """SCRAM-SHA-512 users with simple authorization and known operations only."""
        for user in build.of_kind("KafkaUser"):
            spec = user["spec"]
            assert set(spec) <= {"authentication", "authorization", "quotas", "template"}
            assert spec["authentication"] == {"type": "scram-sha-512"}
            assert spec["authorization"]["type"] == "simple"
            for acl in spec["authorization"]["acls"]:
                assert set(acl) <= {"resource", "operations", "host", "type"}
                assert acl["resource"]["type"] in {"topic", "group", "cluster", "transactionalId"}
                assert set(acl["operations"]) <= ACL_OPERATIONS - {"All"}

    def test_services_log_in_as_their_user(self, build: Build) -> None:
        """Each service's SASL user is a KafkaUser; its password is Strimzi's Secret for it."""
        for deployment in build.of_kind("Deployment"):
            container = pod_template(deployment)[1]["containers"][0]
            env = build.container_env(container)
            user = env["KAFKA_SASL_USERNAME"]
            assert user is not None
            assert user == deployment["metadata"]["name"]
            assert build.get("KafkaUser", user) is not None
            assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
            assert env["KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL")
            assert build.secret_ref(container, "KAFKA_SASL_PASSWORD") == (user, "password")

    def test_check_catches_an_extra_grant(self, build: Build) -> None:
        """Granting one operation more is a difference the user check sees."""
        user = build.get("KafkaUser", "suno-midi-ingest")
        assert user is not None
        widened = {
            **user,
            "spec": {
                **user["spec"],
                "authorization": {
                    "type": "simple",
                    "acls": [
                        *user["spec"]["authorization"]["acls"],
                        {
                            "resource": {"type": "topic", "name": TOPICS.notes},
                            "operations": ["Read"],
                        },
                    ],
                },
            },
        }
        assert _grants(widened) != _expected_grants(build)["suno-midi-ingest"]


class TestTls:
    def test_tls_clients_trust_the_cluster_ca(self, build: Build) -> None:
        """With SASL_SSL, each container mounts Strimzi's cluster CA as its Kafka trust store."""
        for deployment in build.of_kind("Deployment"):
            _, pod = pod_template(deployment)
            container = pod["containers"][0]
            env = build.container_env(container)
            if env["KAFKA_SECURITY_PROTOCOL"] != "SASL_SSL":
                assert "KAFKA_SSL_CAFILE" not in env
                continue
            assert str(env["KAFKA_BOOTSTRAP_SERVERS"]).endswith(":9093")
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            ca_file = str(env["KAFKA_SSL_CAFILE"])
            mount_name = next(n for n, path in mounts.items() if ca_file.startswith(path + "/"))
            secret = volumes[mount_name]["secret"]
            assert secret["secretName"] == "suno-kafka-cluster-ca-cert"
            assert {item["key"] for item in secret["items"]} == {"ca.crt"}

    def test_prod_uses_tls(self, build_overlay: Any) -> None:
        """Production never sends Kafka traffic in clear text."""
        for config_map in build_overlay("prod").of_kind("ConfigMap"):
            protocol = config_map.get("data", {}).get("KAFKA_SECURITY_PROTOCOL")
            assert protocol in (None, "SASL_SSL")
