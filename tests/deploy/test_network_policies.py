"""Default deny, then only the traffic each service needs."""

from __future__ import annotations

import copy
from typing import Any

from .manifests import Build, Peer, flatten, network_rules, pod_template

DNS = {("UDP", 53), ("TCP", 53)}
KAFKA = {("TCP", 9092), ("TCP", 9093)}
REDIS = {("TCP", 6379), ("TCP", 26379)}  # servers and Cluster nodes; Sentinels
OBJECT_STORAGE = {("TCP", 443), ("TCP", 9000)}
POSTGRES = {("TCP", 5432)}
PROVIDER = {("TCP", 443)}  # the provider's HTTPS API
SERVICE_METRICS = {("TCP", port) for port in (8080, 8081, 8082, 8083)}
PROMETHEUS_API = {("TCP", 9090)}
#: Where the cluster's own pods and services live: the provider egress must exclude them.
PRIVATE_V4 = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}

EXPECTED_EGRESS = {
    "suno-midi-ingest": DNS | KAFKA | REDIS,
    "suno-midi-processor": DNS | KAFKA | OBJECT_STORAGE,
    "suno-midi-archiver": DNS | KAFKA | OBJECT_STORAGE,
    "suno-midi-tracker": DNS | KAFKA | POSTGRES | PROVIDER,
    "suno-midi-console": DNS | KAFKA | POSTGRES | OBJECT_STORAGE | SERVICE_METRICS | PROMETHEUS_API,
}
INGRESS_CONTROLLER = Peer(
    namespace="ingress-nginx", pods=(("app.kubernetes.io/name", "ingress-nginx"),)
)
PROMETHEUS = Peer(namespace="monitoring", pods=())
NAMESPACE = Peer(namespace=None, pods=())  # any pod of the namespace
TRACKER_CLIENTS = Peer(namespace="*", pods=(("suno-midi/tracker-client", "true"),))
EXPECTED_INGRESS_PEERS = {
    "suno-midi-ingest": {INGRESS_CONTROLLER, PROMETHEUS},
    "suno-midi-processor": {PROMETHEUS},
    "suno-midi-archiver": {PROMETHEUS},
    "suno-midi-tracker": {TRACKER_CLIENTS, PROMETHEUS},
    "suno-midi-console": {NAMESPACE, PROMETHEUS},
}


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(pod_template(workload)[0]["labels"])


def _egress_ports(build: Build, workload: dict[str, Any]) -> set[tuple[str, int | str]]:
    isolated, rules = network_rules(build, _labels(workload), "egress")
    assert isolated, f"{workload['metadata']['name']} egress is not isolated"
    return set(flatten(rule.ports for rule in rules))


class TestNetworkPolicies:
    def test_default_deny(self, build: Build) -> None:
        """One policy selects every pod and allows nothing in either direction."""
        deny = [
            policy
            for policy in build.of_kind("NetworkPolicy")
            if policy["spec"].get("podSelector") == {}
            and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not policy["spec"].get("ingress")
            and not policy["spec"].get("egress")
        ]
        assert len(deny) == 1

    def test_egress_is_exactly_what_each_service_needs(self, build: Build) -> None:
        """Kafka for all; Redis for the ingest; object storage for the consumers; DNS."""
        for workload in build.workloads():
            name = workload["metadata"]["name"]
            assert _egress_ports(build, workload) == EXPECTED_EGRESS[name], name

    def test_no_rule_allows_every_port(self, build: Build) -> None:
        """Each allow rule names its ports."""
        for workload in build.workloads():
            for direction in ("ingress", "egress"):
                _, rules = network_rules(build, _labels(workload), direction)
                assert all(rule.ports for rule in rules), (workload["metadata"]["name"], direction)

    def test_kafka_egress_goes_to_the_strimzi_cluster(self, build: Build) -> None:
        """The Kafka ports are open only towards the brokers of the cluster the topics name."""
        clusters = {
            t["metadata"]["labels"]["strimzi.io/cluster"] for t in build.of_kind("KafkaTopic")
        }
        assert len(clusters) == 1
        cluster = clusters.pop()
        for workload in build.workloads():
            _, rules = network_rules(build, _labels(workload), "egress")
            kafka_rules = [rule for rule in rules if rule.ports & KAFKA]
            assert kafka_rules, workload["metadata"]["name"]
            for rule in kafka_rules:
                assert rule.ports == frozenset(KAFKA)
                assert rule.peers, "Kafka egress must name its peers"
                for peer in rule.peers:
                    assert ("strimzi.io/cluster", cluster) in peer.pods

    def test_dns_goes_to_kube_dns(self, build: Build) -> None:
        """Port 53 is open only towards the cluster DNS."""
        kube_dns = Peer(namespace="kube-system", pods=(("k8s-app", "kube-dns"),))
        for workload in build.workloads():
            _, rules = network_rules(build, _labels(workload), "egress")
            for rule in rules:
                if rule.ports & DNS:
                    assert rule.ports == frozenset(DNS)
                    assert rule.peers == frozenset({kube_dns})

    def test_ingress_only_from_expected_peers(self, build: Build) -> None:
        """The ingress controller reaches the ingest; Prometheus reaches every service."""
        for workload in build.workloads():
            name = workload["metadata"]["name"]
            isolated, rules = network_rules(build, _labels(workload), "ingress")
            assert isolated, name
            assert all(rule.peers for rule in rules), f"{name}: an ingress rule without peers"
            peers = set(flatten(rule.peers for rule in rules))
            assert peers == EXPECTED_INGRESS_PEERS[name], name

    def test_ingress_ports_are_the_http_port(self, build: Build) -> None:
        """Allowed ingress ports name a port the container declares."""
        for workload in build.workloads():
            container = pod_template(workload)[1]["containers"][0]
            declared = {port["name"] for port in container["ports"]}
            _, rules = network_rules(build, _labels(workload), "ingress")
            ports = {port for rule in rules for _, port in rule.ports}
            assert ports and ports <= declared, workload["metadata"]["name"]

    def test_check_catches_an_extra_egress_port(self, build: Build) -> None:
        """Opening one more egress port changes the computed set (the check is not vacuous)."""
        broken = Build(build.overlay, copy.deepcopy(build.objects))
        policy = broken.get("NetworkPolicy", "suno-midi-processor")
        assert policy is not None
        policy["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 5432}]})
        processor = broken.get("Deployment", "suno-midi-processor")
        assert processor is not None
        assert _egress_ports(broken, processor) != EXPECTED_EGRESS["suno-midi-processor"]

    def test_provider_egress_stays_outside_the_cluster(self, build: Build) -> None:
        """The tracker's HTTPS goes to addresses only, none of the private ranges pods use."""
        tracker = build.get("Deployment", "suno-midi-tracker")
        assert tracker is not None
        _, rules = network_rules(build, _labels(tracker), "egress")
        https = [rule for rule in rules if rule.ports >= PROVIDER]
        assert len(https) == 1 and https[0].ports == frozenset(PROVIDER)
        assert https[0].peers and all(peer.cidr for peer in https[0].peers)
        policy = build.get("NetworkPolicy", "suno-midi-tracker")
        assert policy is not None
        blocks = [
            entry["ipBlock"]
            for rule in policy["spec"]["egress"]
            for entry in rule.get("to", [])
            if "ipBlock" in entry
        ]
        v4 = [block for block in blocks if block["cidr"] == "0.0.0.0/0"]
        assert len(v4) == 1 and set(v4[0].get("except", [])) >= PRIVATE_V4
        assert all(block.get("except") for block in blocks), "an ipBlock without exceptions"
