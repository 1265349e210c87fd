"""The replay through Kafka as production runs it: ``suno-archiver replay --all`` publishing
to a fresh topic, the processor service (its own process) consuming it, until the
processor's group has committed every offset."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from devenv.processes import free_port, log_tail, stop, wait_http
from services.common.settings import VARIABLES

__all__ = ["ReplayRun", "processor", "replay_through_kafka", "service_env"]

#: Longest wait for the last offset to be committed once the replay has published it all.
_DRAIN_TIMEOUT_SECONDS = 600.0
#: py-spy's sampling rate (per second), when profiling.
_SAMPLING_RATE = 100


@dataclass(frozen=True)
class ReplayRun:
    """One replay: callbacks sent, the seconds from its start until the CLI exited (the
    publisher alone) and until the processor had committed the last offset."""

    sent: int
    publish_seconds: float
    seconds: float
    #: The processor's mean seconds per record from fetch to "may commit" (its
    #: ``processor_record_processing_seconds``): the rest of ``seconds / sent`` is commits,
    #: fetches and waiting for the replay.
    handling_seconds: float
    #: CPU seconds (user + system) each process used during the replay (the broker's
    #: when it is this run's).
    cpu: dict[str, float]


def service_env(bootstrap: str, data_dir: Path) -> dict[str, str]:
    """The services' embedded defaults (no setting of the caller's leaks in), plus this
    run's broker, storage root, and topics and group of its own (a fresh topic each run)."""
    declared = {variable.name for variable in VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in declared}
    run = uuid.uuid4().hex[:8]
    env.update(
        {
            "LOG_FORMAT": "json",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_CALLBACKS": f"bench.replay.{run}.callbacks",
            "KAFKA_TOPIC_NOTES": f"bench.replay.{run}.notes",
            "KAFKA_TOPIC_DLQ": f"bench.replay.{run}.dlq",
            "KAFKA_TOPIC_REQUESTS": f"bench.replay.{run}.requests",
            "PROCESSOR_GROUP_ID": f"bench-replay-{run}",
            "DATA_DIR": str(data_dir),
            "PROCESSOR_HOST": "127.0.0.1",
            "PROCESSOR_PORT": str(free_port()),
            # Previews cost seconds of FluidSynth per song: this bench measures the MIDI path.
            "PROCESSOR_PREVIEWS": "off",
        }
    )
    return env


@contextmanager
def processor(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m services.processor`` as its own process, ready (topics created, group
    joined) when this yields; SIGTERM (it drains and commits) when the block ends."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.processor"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{env['PROCESSOR_PORT']}/readyz"
        wait_http(url, 60, process=process, name="the processor", log=log)
        yield process
    finally:
        stop(process, 30)


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    """The group's committed offsets on ``topic``, summed (a fresh topic: records done)."""
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_now(processor: int, broker: int | None) -> dict[str, float]:
    """CPU seconds so far of the processor, the broker and this process's reaped children
    (the replay CLI, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = {"processor": cpu_seconds(processor), "replay CLI": usage.ru_utime + usage.ru_stime}
    if broker is not None:
        now["broker"] = cpu_seconds(broker)
    return now


def mean_processing_seconds(port: str) -> float:
    """``processor_record_processing_seconds`` sum / count, from the service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "processor_record_processing_seconds":
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    key = sample.name.rsplit("_", 1)[1]
                    values[key] = values.get(key, 0.0) + float(sample.value)
    return values.get("sum", 0.0) / max(1.0, values.get("count", 0.0))


def _sampler(output: Path) -> list[str]:
    """py-spy sampling without stopping the process (``--nonblocking``), collapsed stacks."""
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    rate = str(_SAMPLING_RATE)
    return [py_spy, "record", "--nonblocking", "-r", rate, "-f", "raw", "-o", str(output)]


def _profiled(command: list[str], output: Path | None) -> list[str]:
    return command if output is None else [*_sampler(output), "--", *command]


def _attach(pid: int, output: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*_sampler(output), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def replay_through_kafka(
    env: dict[str, str],
    count: int,
    logs: Path,
    *,
    service: subprocess.Popen[bytes],
    broker: int | None = None,
    profiles: Path | None = None,
) -> ReplayRun:
    """Run ``suno-archiver replay --all`` and wait until the processor's group has
    committed ``count`` offsets. With ``profiles``, py-spy samples the replay CLI and the
    processor meanwhile (``replay.txt``, ``processor.txt``: collapsed stacks). ``broker``:
    the local broker's process id, to count its CPU time too."""
    topic, group = env["KAFKA_TOPIC_CALLBACKS"], env["PROCESSOR_GROUP_ID"]
    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    sampler = None if profiles is None else _attach(service.pid, profiles / "processor.txt")
    try:
        command = [sys.executable, "-m", "services.archiver", "replay", "--all", "--quiet"]
        command = _profiled(command, None if profiles is None else profiles / "replay.txt")
        before = _cpu_now(service.pid, broker)
        started = time.perf_counter()
        log = logs / "replay.log"
        with log.open("ab") as out:
            cli = await asyncio.create_subprocess_exec(*command, env=env, stdout=out, stderr=out)
        publish_seconds = None
        deadline = time.monotonic() + _DRAIN_TIMEOUT_SECONDS
        while (done := await committed(admin, group, topic)) < count:
            if publish_seconds is None and cli.returncode is not None:
                publish_seconds = time.perf_counter() - started
                if cli.returncode != 0:
                    raise RuntimeError(f"the replay failed ({cli.returncode}):\n{log_tail(log)}")
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError(
                    f"{done} of {count} committed:\n{log_tail(log, logs / 'processor.log')}"
                )
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        await cli.wait()
        after = _cpu_now(service.pid, broker)
        cpu = {k: after[k] - v for k, v in before.items()}
        handling = mean_processing_seconds(env["PROCESSOR_PORT"])
        return ReplayRun(count, publish_seconds or seconds, seconds, handling, cpu)
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
        await admin.close()
