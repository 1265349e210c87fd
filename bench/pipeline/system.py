"""The system under test, as processes: a Kafka broker, Redis, an ingest with nothing behind
it (the baseline), and the pipeline (an ingest, the processor, the archiver); with what the
benchmark reads from it while it runs: consumer lag, CPU time per process, notes events."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.ingest.run import KEY, cpu_seconds, process
from devenv.kafka import LocalKafka
from devenv.processes import free_port, wait_http
from devenv.redis import LocalRedis
from services.common.keys import task_key
from services.common.settings import VARIABLES

from .search import group_lag

__all__ = ["Lag", "Pipeline", "cpu_by_process", "notes_written_at", "running"]

#: The Python services of the pipeline, by the name the benchmark prints.
SERVICES = ("ingest", "processor", "archiver")


@dataclass
class Pipeline:
    """Servers, ports, topics, groups and processes of one run.

    The pipeline is started afresh for each load (:meth:`stage`): its own callbacks and
    notes topics and consumer groups, so a load that left a backlog costs the next nothing.
    """

    run_dir: Path
    bootstrap: str
    redis_url: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: The stage running now (part of its topics' and groups' names).
    current: str = "none"
    ports: dict[str, int] = field(default_factory=dict)
    #: Per process name (``processor`` for all its replicas), its process ids.
    pids: dict[str, list[int]] = field(default_factory=dict)
    #: Settings the run gives the services besides its own (``--consumer-concurrency``).
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def callbacks(self) -> str:
        return f"bench.{self.tag}.{self.current}.callbacks"

    @property
    def notes(self) -> str:
        return f"bench.{self.tag}.{self.current}.notes"

    @property
    def groups(self) -> dict[str, str]:
        return {name: f"bench-{self.tag}-{self.current}-{name}" for name in SERVICES[1:]}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/callbacks/suno/midi"

    def env(self, callbacks: str) -> dict[str, str]:
        """The services' embedded defaults (none of the caller's settings leaks in), this
        run's servers, topics and groups; previews off: FluidSynth would be on every
        record's path, and the benchmark measures what the pipeline keeps."""
        declared = {variable.name for variable in VARIABLES}
        env = {k: v for k, v in os.environ.items() if k not in declared}
        env.update(
            {
                "LOG_FORMAT": "json",
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_TOPIC_CALLBACKS": callbacks,
                "KAFKA_TOPIC_NOTES": self.notes,
                "KAFKA_TOPIC_DLQ": f"bench.{self.tag}.dlq",
                "DATA_DIR": str(self.data_dir),
                "SUNO_WEBHOOK_SECRETS": KEY,
                "REDIS_URL": self.redis_url,
                "INGEST_HOST": "127.0.0.1",
                "PROCESSOR_HOST": "127.0.0.1",
                "ARCHIVER_HOST": "127.0.0.1",
                "PROCESSOR_GROUP_ID": self.groups["processor"],
                "ARCHIVER_GROUP_ID": self.groups["archiver"],
                "PROCESSOR_PREVIEWS": "off",
                **self.extra,
            }
        )
        return env

    @contextlib.contextmanager
    def stage(self, name: str, replicas: int = 1) -> Iterator[None]:
        """The pipeline on topics and groups of its own: an ingest, ``replicas`` processors
        and as many archivers; stopped (and its files removed) on the way out."""
        self.current = name
        commands = {"ingest": [sys.executable, "-m", "services.ingest"]}
        for replica in range(replicas):
            commands[f"processor-{replica}"] = [sys.executable, "-m", "services.processor"]
            commands[f"archiver-{replica}"] = [sys.executable, "-m", "services.archiver", "run"]
        with _processes(self, commands, self.callbacks):
            yield
        self.current = "none"
        for folder in ("raw", "midi"):
            shutil.rmtree(self.data_dir / folder, ignore_errors=True)


@contextlib.contextmanager
def running(run_dir: Path) -> Iterator[Pipeline]:
    """Broker and Redis, and the baseline ingest (``alone``: its own topic, no consumer);
    everything stopped on the way out."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    broker = None if external else LocalKafka(heap="1g", data_dir=run_dir / "kafka").start()
    redis = LocalRedis().start()
    try:
        system = Pipeline(
            run_dir,
            external or broker.bootstrap_servers,  # type: ignore[union-attr]
            redis.url,
        )
        system.data_dir.mkdir(parents=True, exist_ok=True)
        if broker is not None and broker.process is not None:
            system.pids["broker"] = [broker.process.pid]
        if redis.process is not None:
            system.pids["redis"] = [redis.process.pid]
        alone = {"alone": [sys.executable, "-m", "services.ingest"]}
        with _processes(system, alone, f"bench.{system.tag}.alone.callbacks"):
            yield system
    finally:
        redis.stop()
        if broker is not None:
            broker.stop()
        # Gigabytes of callbacks: gone; the logs and profiles stay in run_dir.
        for bulky in ("kafka", "data"):
            shutil.rmtree(run_dir / bulky, ignore_errors=True)


_PORT_VARIABLES = {"processor": "PROCESSOR_PORT", "archiver": "ARCHIVER_PORT"}


@contextlib.contextmanager
def _processes(system: Pipeline, commands: dict[str, list[str]], topic: str) -> Iterator[None]:
    """Start each command (its name: ``service`` or ``service-replica``), wait until each
    answers ``/readyz``; terminate them on the way out."""
    with contextlib.ExitStack() as stack:
        started = {}
        for name, command in commands.items():
            service = name.split("-")[0]
            port = free_port()
            system.ports[name] = port
            env = {**system.env(topic), _PORT_VARIABLES.get(service, "INGEST_PORT"): str(port)}
            prefix = "" if system.current == "none" else f"{system.current}-"
            log = system.run_dir / f"{prefix}{name}.log"
            proc = stack.enter_context(process(command, env, log))
            started[name] = (proc, log)
            system.pids.setdefault(service, []).append(proc.pid)
        try:
            for name, (proc, log) in started.items():
                ready = f"http://127.0.0.1:{system.ports[name]}/readyz"
                wait_http(ready, 90, process=proc, name=name, log=log)
            yield
        finally:
            for name, (proc, _) in started.items():
                system.pids[name.split("-")[0]].remove(proc.pid)


class Lag:
    """The consumer groups' lag on the callbacks topic, from Kafka's committed offsets and
    the end offsets (what an operator's lag exporter reads), on an event loop of its own so
    the benchmark's synchronous code can ask between its load runs."""

    def __init__(self, system: Pipeline) -> None:
        self._system = system
        self._runner = asyncio.Runner()
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    def __enter__(self) -> Lag:
        self._runner.run(self._start())
        return self

    def __exit__(self, *_exc: object) -> None:
        self._runner.run(self._stop())
        self._runner.close()

    async def _start(self) -> None:
        # aiokafka's clients belong to the loop they are made on: made here, on the runner's.
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._system.bootstrap)
        self._ends = AIOKafkaConsumer(bootstrap_servers=self._system.bootstrap)
        await self._admin.start()
        await self._ends.start()
        self._partitions = await self._partitions_of(self._system.callbacks)

    async def _partitions_of(self, topic: str) -> list[TopicPartition]:
        assert self._admin is not None, "use Lag as a context"
        (described,) = await self._admin.describe_topics([topic])
        found = sorted(p["partition"] for p in described["partitions"])
        if not found:
            raise RuntimeError(f"topic {topic} has no partitions: {described}")
        return [TopicPartition(topic, p) for p in found]

    def end_offsets(self, topic: str) -> dict[int, int]:
        """A topic's end offsets now, by partition."""
        return self._runner.run(self._end_offsets(topic))

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        assert self._ends is not None, "use Lag as a context"
        ends = await self._ends.end_offsets(await self._partitions_of(topic))
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _stop(self) -> None:
        if self._ends is not None:
            await self._ends.stop()
        if self._admin is not None:
            await self._admin.close()

    def by_group(self) -> dict[str, int]:
        return self._runner.run(self._by_group())

    async def _by_group(self) -> dict[str, int]:
        assert self._ends is not None and self._admin is not None, "use Lag as a context"
        ends = await self._ends.end_offsets(self._partitions)
        lags = {}
        for name, group in self._system.groups.items():
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            lags[name] = group_lag(committed, ends)
        return lags

    def drain_seconds(self, limit: float, interval: float = 0.1) -> float | None:
        """Seconds until every group's lag is 0 (asked every ``interval``), ``None`` when
        it is not within ``limit``."""
        loop_time = self._runner.get_loop().time
        began = loop_time()
        while True:
            if not any(self.by_group().values()):
                return loop_time() - began
            if loop_time() - began > limit:
                return None
            self._runner.run(asyncio.sleep(interval))


def notes_written_at(system: Pipeline, since: dict[int, int]) -> dict[str, float]:
    """Per task id, the timestamp (Unix seconds) of its notes event, from the partition
    offsets ``since`` on: the processor publishes it only once the MIDI file is in place
    (written, fsynced, renamed), so it bounds from above when the file became readable.
    A task's file is also checked to be there: ``midi/<task key>.mid`` below DATA_DIR."""
    return asyncio.run(_notes(system, since))


async def _notes(system: Pipeline, since: dict[int, int]) -> dict[str, float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=system.bootstrap, enable_auto_commit=False)
    await consumer.start()
    written: dict[str, float] = {}
    try:
        parts = [TopicPartition(system.notes, p) for p in since]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, since[tp.partition])
        ends = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batch.values():
                for record in records:
                    task = (record.key or b"").decode()
                    path = system.data_dir / "midi" / f"{task_key(task)}.mid"
                    if path.exists():
                        written[task] = record.timestamp / 1000
    finally:
        await consumer.stop()
    return written


def cpu_by_process(system: Pipeline) -> dict[str, float]:
    """CPU seconds each process of the run has used so far (user + system, all threads),
    the replicas of a service summed."""
    return {
        name: sum(cpu_seconds(pid) for pid in pids) for name, pids in system.pids.items() if pids
    }
