"""Which real Kafka the test session uses, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when set (a cluster someone runs for us);
2. testcontainers' Kafka when a Docker engine answers;
3. otherwise the project's own launcher (``devenv.kafka``: Apache Kafka jars via Maven).

A broker that cannot start fails the session at once with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from devenv.kafka import BrokerStartError, LocalKafka


@dataclass
class Broker:
    bootstrap_servers: str
    source: str
    #: The local launcher's handle, when the session owns the broker (outage tests need it).
    local: LocalKafka | None = None


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def session_broker() -> Iterator[Broker]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield Broker(external, f"KAFKA_BOOTSTRAP_SERVERS={external}")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container: Any = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        with container:
            yield Broker(container.get_bootstrap_server(), "testcontainers (apache/kafka:4.1.1)")
        return
    broker = LocalKafka()
    try:
        broker.start()
    except BrokerStartError as exc:
        raise RuntimeError(f"the local Kafka broker could not start:\n{exc}") from exc
    try:
        yield Broker(
            broker.bootstrap_servers,
            f"local Apache Kafka {broker.version} (Maven jars, KRaft) "
            f"at {broker.bootstrap_servers}",
            local=broker,
        )
    finally:
        broker.stop()
