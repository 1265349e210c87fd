"""Start-up failures of the real ``python -m services.ingest``: one line, what to fix, exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.processes import free_port

from ..brokers import Broker

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "suno-ingest"


def start_ingest(**variables: str) -> subprocess.CompletedProcess[str]:
    """Run the ingest entry point with ``variables`` on top of a loopback set-up."""
    env = {
        **os.environ,
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": "0",
        # Readable output: a traceback would show as one, not as a JSON field.
        "LOG_FORMAT": "console",
        # Without keys, the opt-in: the other start-up checks are the subject here.
        "INGEST_ALLOW_UNSIGNED": "true",
        **variables,
    }
    for name in ("REDIS_URL", "SUNO_WEBHOOK_SECRETS"):
        if name not in variables:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "services.ingest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refusal_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the program wrote about itself: last on stderr, exit status 1."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    own = [line for line in lines if line.startswith(f"{PROGRAM}:")]
    assert own == lines[-1:], result.stderr
    return own[0]


@pytest.fixture(name="taken_port")
def fixture_taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class TestStartupFailures:
    def test_unreachable_broker_is_one_line_naming_the_setting(self) -> None:
        """No broker: one line naming the address and KAFKA_BOOTSTRAP_SERVERS, no traceback."""
        servers = f"127.0.0.1:{free_port()}"  # nothing listens there
        line = refusal_line(start_ingest(KAFKA_BOOTSTRAP_SERVERS=servers))
        assert line.startswith(f"{PROGRAM}: cannot start: cannot reach Kafka at {servers}"), line
        assert "KAFKA_BOOTSTRAP_SERVERS" in line

    def test_bad_setting_is_one_line_naming_the_variable(self) -> None:
        """A value the settings refuse: the only output is one line naming the variable."""
        result = start_ingest(INGEST_MAX_JSON_DEPTH="deep")
        line = refusal_line(result)
        assert result.stderr.strip() == line
        assert line.startswith(f"{PROGRAM}: configuration error: INGEST_MAX_JSON_DEPTH "), line
        assert "'deep'" in line

    @pytest.mark.parametrize("secrets", ["", " , "])
    def test_no_webhook_key_is_one_line_saying_what_to_set(self, secrets: str) -> None:
        """No key (blank values count as none) and no opt-in: the ingest does not start,
        before reaching for Kafka, and says which variable to set."""
        servers = f"127.0.0.1:{free_port()}"  # nothing listens there: never reached
        result = start_ingest(
            SUNO_WEBHOOK_SECRETS=secrets,
            INGEST_ALLOW_UNSIGNED="false",
            KAFKA_BOOTSTRAP_SERVERS=servers,
        )
        line = refusal_line(result)
        assert result.stderr.strip() == line
        assert line.startswith(f"{PROGRAM}: configuration error: SUNO_WEBHOOK_SECRETS "), line
        assert "INGEST_ALLOW_UNSIGNED=true" in line

    @pytest.mark.kafka
    def test_port_in_use_is_one_line(self, kafka_broker: Broker, taken_port: int) -> None:
        """Another process on INGEST_PORT: one line naming the address, no traceback."""
        result = start_ingest(
            KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
            KAFKA_TOPIC_CALLBACKS=f"test.{uuid.uuid4().hex[:10]}.callbacks",
            KAFKA_TOPIC_PARTITIONS="1",
            INGEST_PORT=str(taken_port),
        )
        line = refusal_line(result)
        assert line.startswith(f"{PROGRAM}: cannot start: cannot listen on 127.0.0.1:{taken_port}")

    @pytest.mark.kafka
    def test_unusable_redis_url_is_one_line_without_the_url(self, kafka_broker: Broker) -> None:
        """A REDIS_URL redis-py cannot use: one line naming the variable, never its value."""
        url = "http://user:hunter2@redis.example"
        result = start_ingest(
            KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
            KAFKA_TOPIC_CALLBACKS=f"test.{uuid.uuid4().hex[:10]}.callbacks",
            KAFKA_TOPIC_PARTITIONS="1",
            REDIS_URL=url,
        )
        line = refusal_line(result)
        assert line.startswith(f"{PROGRAM}: cannot start: REDIS_URL "), line
        assert "hunter2" not in result.stderr

    @pytest.mark.kafka
    def test_url_unfit_for_the_mode_is_one_line_without_the_url(self, kafka_broker: Broker) -> None:
        """REDIS_MODE=cluster with a database other than 0: one line, no password."""
        result = start_ingest(
            KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
            KAFKA_TOPIC_CALLBACKS=f"test.{uuid.uuid4().hex[:10]}.callbacks",
            KAFKA_TOPIC_PARTITIONS="1",
            REDIS_MODE="cluster",
            REDIS_URL="redis://user:hunter2@127.0.0.1:7000/3",
        )
        line = refusal_line(result)
        assert line.startswith(f"{PROGRAM}: cannot start: REDIS_URL "), line
        assert "database 0 only" in line
        assert "hunter2" not in result.stderr
