"""Session-wide fixtures: one real Kafka broker for every test that needs one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devenv.send_example import EXAMPLES, provider_examples
from services.common.settings import KafkaSettings, Settings, TopicNames

from .brokers import Broker, session_broker

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)

BROKER_SOURCE = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return "kafka: KAFKA_BOOTSTRAP_SERVERS if set, else testcontainers, else local Maven jars"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    source = terminalreporter.config.stash.get(BROKER_SOURCE, "none (no test needed Kafka)")
    terminalreporter.write_line(f"kafka broker used: {source}")


@pytest.fixture(name="kafka_broker", scope="session")
def fixture_kafka_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's real Kafka broker; failing to start fails the session loudly."""
    try:
        with session_broker() as broker:
            request.config.stash[BROKER_SOURCE] = broker.source
            yield broker
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(name="topics")
def fixture_topics() -> TopicNames:
    """Topic names unique to one test, so tests never read each other's records."""
    suffix = uuid.uuid4().hex[:10]
    return TopicNames(
        callbacks=f"test.{suffix}.callbacks",
        notes=f"test.{suffix}.notes",
        dlq=f"test.{suffix}.dlq",
        requests=f"test.{suffix}.requests",
    )


@pytest.fixture(name="settings")
def fixture_settings(kafka_broker: Broker, topics: TopicNames, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, unique topics and groups, a temp data dir.

    Without webhook keys: the ingest takes the opt-in for unsigned callbacks, and the
    processor handles the UNVERIFIED events they make (tests of the fail-closed rules
    override both).
    """
    base = Settings.from_env({})
    suffix = uuid.uuid4().hex[:8]
    return base.with_overrides(
        kafka=replace(
            KafkaSettings(),
            bootstrap_servers=kafka_broker.bootstrap_servers,
            topics=topics,
            partitions=3,
        ),
        storage={"data_dir": tmp_path / "data"},
        ingest={"port": 0, "allow_unsigned": True},
        # Previews (FluidSynth) off except where a test turns them on (test_previews.py).
        processor={
            "port": 0,
            "group_id": f"test-processor-{suffix}",
            "require_verified": False,
            "previews": "off",
        },
        archiver={"port": 0, "group_id": f"test-archiver-{suffix}"},
    )


@pytest.fixture(name="reference_examples", scope="session")
def fixture_reference_examples() -> dict[str, bytes]:
    """The provider's example callbacks kept in ``examples/callbacks``, as raw bytes."""
    examples = {name: path.read_bytes() for name, path in provider_examples().items()}
    if not examples:
        pytest.fail(f"the provider's examples are missing: expected them in {EXAMPLES}")
    return examples
