"""A real single-node Apache Kafka broker (KRaft, combined broker+controller), no Docker.

Maven resolves ``org.apache.kafka:kafka_2.13`` and its runtime dependencies into a cache
outside the repository; Kafka's own storage tool formats a temporary data directory; the
broker listens on a free loopback port and is stopped cleanly (SIGTERM, then SIGKILL).

    python -m devenv.kafka            # run a broker in the foreground until Ctrl-C
    python -m devenv.kafka --resolve  # only download the jars (CI warm-up)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .processes import free_port, kill, log_tail, stop

__all__ = ["KAFKA_VERSION", "BrokerStartError", "LocalKafka", "free_port", "resolve_jars"]


KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-pom.xml")


class BrokerStartError(RuntimeError):
    """The local broker could not be resolved or started; the message has its log tail."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "suno-midi"


def resolve_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of Kafka's runtime jars, resolved with Maven on first use."""
    libs = cache_dir() / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerStartError("Maven (mvn) is not installed: it resolves the Kafka jars")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerStartError(
            f"Maven could not resolve Kafka {version}:\n{(result.stdout + result.stderr)[-4000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.touch()
    return libs


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


class LocalKafka:
    """One broker process; use as a context manager or call ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self.version = version
        self.heap = heap
        self.max_message_bytes = max_message_bytes
        #: Formatting again with another id would refuse the data a restart keeps.
        self.cluster_id = _cluster_id()
        self._own_dir = data_dir is None
        self.workdir = data_dir or Path(tempfile.mkdtemp(prefix="suno-kafka-"))
        self.log_file = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        fetch = max(self.max_message_bytes, 50 * 1024 * 1024)
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    f"message.max.bytes={self.max_message_bytes}",
                    f"replica.fetch.max.bytes={fetch}",
                    f"socket.request.max.bytes={fetch + 1024 * 1024}",
                    "num.partitions=1",
                    "log.flush.interval.messages=9223372036854775807",
                ]
            )
            + "\n"
        )
        (self.workdir / "log4j2.properties").write_text(_LOG4J.format(log=self.log_file))
        return config

    def _java(self, libs: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerStartError("Java is not installed: the local Kafka broker needs a JRE 17+")
        return [
            java,
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        libs = resolve_jars(self.version)
        config = self._write_config()
        if not self._formatted_cluster_id():
            fmt = subprocess.run(
                self._java(
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    # "=" form: a URL-safe base64 id may start with "-".
                    f"--cluster-id={self.cluster_id}",
                    "-c",
                    str(config),
                    "--ignore-formatted",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise BrokerStartError(f"kafka-storage format failed:\n{fmt.stdout}{fmt.stderr}")
        stdout = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            self._java(libs, "kafka.Kafka", str(config)),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stdout.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(
                    f"Kafka exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._answers_metadata():
                return self
            time.sleep(0.25)
        self.stop()
        raise BrokerStartError(f"Kafka did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def _formatted_cluster_id(self) -> str | None:
        """The id of an already formatted data directory (kept across runs), else ``None``."""
        meta = self.workdir / "data" / "meta.properties"
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                self.cluster_id = line.partition("=")[2].strip()
                return self.cluster_id
        return None

    def _answers_metadata(self) -> bool:
        """A Kafka ApiVersions + Metadata round trip, spoken directly on the socket."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                # Metadata v1 request for no topics: header (api 3, v1, corr 1, client id).
                client = b"probe"
                body = (3).to_bytes(2, "big") + (1).to_bytes(2, "big") + (1).to_bytes(4, "big")
                body += len(client).to_bytes(2, "big") + client + (0).to_bytes(4, "big")
                sock.sendall(len(body).to_bytes(4, "big") + body)
                size = int.from_bytes(_recv_exact(sock, 4), "big")
                response = _recv_exact(sock, size)
        except OSError:
            return False
        # correlation id, then the brokers array: at least one broker registered.
        return response[:4] == (1).to_bytes(4, "big") and int.from_bytes(response[4:8], "big") > 0

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, self.workdir / "stdout.log", lines=lines)

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        stop(process, timeout)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the broker abruptly, keeping its data (for outage tests); ``restart()`` after."""
        process, self.process = self.process, None
        kill(process)

    def restart(self, timeout: float = 90.0) -> LocalKafka:
        """Start again on the same ports with the same data."""
        own, self._own_dir = self._own_dir, False
        try:
            if self.process is not None:
                self.stop()
            return self.start(timeout)
        finally:
            self._own_dir = own

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return bytes(chunks)


@contextlib.contextmanager
def running_broker(port: int | None = None) -> Iterator[LocalKafka]:
    broker = LocalKafka(port=port)
    try:
        yield broker.start()
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=9092, help="listener port (default 9092)")
    parser.add_argument("--resolve", action="store_true", help="only resolve the jars")
    args = parser.parse_args(argv)
    try:
        if args.resolve:
            print(resolve_jars())
            return
        broker = LocalKafka(port=args.port).start()
    except BrokerStartError as exc:
        sys.exit(f"local Kafka: {exc}")
    print(
        f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap_servers} (Ctrl-C stops it)", flush=True
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
