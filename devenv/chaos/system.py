"""The whole system as separate processes on one machine, each of which a conductor can
SIGKILL and restart, or SIGSTOP and SIGCONT.

Servers: a Kafka broker, Redis and PostgreSQL (durable: a kill is a crash, not a loss),
each restarted on its own data. Our services: two ingest replicas sharing one port
(``INGEST_REUSE_PORT``: the kernel spreads connections over them as a Service spreads
them over pods), the processor, the archiver and the tracker, each kept running the way a
Deployment keeps its pod: started again whenever it exits, unless the conductor holds it
down. The provider simulator runs beside them and is never hit: it is the outside world.
Every process group ever started is remembered, so the run can prove none is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from services.common.settings import VARIABLES, TopicNames

from ..kafka import LocalKafka
from ..postgres import LocalPostgres
from ..processes import free_port, wait_http
from ..redis import LocalRedis
from .plan import SERVICES

__all__ = ["TOPICS", "Knobs", "System", "leftover_processes"]

#: The topics the services use: their defaults (the run's broker is its own).
TOPICS: Final = TopicNames()

WEBHOOK_KEY: Final = "chaos-webhook-key"
API_KEY: Final = "chaos-api-key"
TOKEN: Final = "chaos-token"
#: How long a service that exited on its own waits before it is started again.
_RESTART_BACKOFF_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Knobs:
    """What the provider does and how fast the system is asked to react."""

    seed: int
    #: The simulator's fault ratios (of tasks): callbacks never delivered, delivered twice,
    #: delivered late; outcomes failed and empty. Shapes are drawn from the seed.
    drop: float = 0.15
    duplicate: float = 0.2
    delay: float = 0.05
    failure: float = 0.1
    empty: float = 0.05
    completion_seconds: float = 1.0
    #: The provider's limit and ours (one account): requests per window.
    rate_limit: tuple[int, float] = (50, 1.0)
    #: A task with no result after this long is polled (dropped callbacks end this way).
    poll_after_seconds: int = 8


class Target(Protocol):
    name: str

    def kill(self) -> None: ...
    def revive(self) -> None: ...
    def signal(self, sig: signal.Signals) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Service:
    """One of our processes, started again whenever it exits unless ``held``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    groups: set[int]
    process: subprocess.Popen[bytes] | None = None
    held: bool = False
    #: Exits the conductor did not cause (a start-up refused while a server was down).
    exits: int = 0

    def spawn(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.groups.add(self.process.pid)

    def kill(self) -> None:
        self.held = True
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def revive(self) -> None:
        self.held = False
        self.spawn()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def supervise(self) -> None:
        """Start it again if it exited on its own (checked once a second)."""
        if not self.held and self.process is not None and self.process.poll() is not None:
            self.exits += 1
            self.spawn()

    def terminate(self) -> None:
        """SIGTERM (after a SIGCONT: a frozen process cannot act on it); see :meth:`stop`."""
        self.held = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)

    def stop(self) -> None:
        """Terminate, then wait (SIGKILL after 20 s)."""
        self.terminate()
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()


@dataclass
class Server:
    """A broker, Redis or PostgreSQL: killed with its whole process group, restarted on
    the same port and data."""

    name: str
    server: LocalKafka | LocalRedis | LocalPostgres
    groups: set[int]

    def start(self) -> None:
        self.server.start()
        if self.server.process is not None:
            self.groups.add(self.server.process.pid)

    def kill(self) -> None:
        self.server.kill()

    def revive(self) -> None:
        self.start()

    def signal(self, sig: signal.Signals) -> None:
        process = self.server.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.server.stop()


@dataclass
class System:
    """Every process of one run, in ``run_dir``; ``start()`` then ``stop()``."""

    run_dir: Path
    knobs: Knobs
    groups: set[int] = field(default_factory=set)
    targets: dict[str, Target] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    freezes: Counter[str] = field(default_factory=Counter)
    simulator: Service | None = None
    database_url: str = ""
    bootstrap: str = ""

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    @property
    def services(self) -> list[Service]:
        return [t for t in self.targets.values() if isinstance(t, Service)]

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Servers first, then the simulator, then the services; returns once every
        service answers (each ingest replica listening on the shared port)."""
        self.run_dir.chmod(0o755)  # PostgreSQL runs as its own user below it
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        broker = LocalKafka(data_dir=self.run_dir / "kafka")
        redis = LocalRedis()
        postgres = LocalPostgres(data_dir=self.run_dir / "postgres")
        servers: tuple[tuple[str, LocalKafka | LocalRedis | LocalPostgres], ...] = (
            ("broker", broker),
            ("redis", redis),
            ("postgres", postgres),
        )
        for name, server in servers:
            target = Server(name, server, self.groups)
            self.targets[name] = target
            target.start()
        self.database_url = postgres.url
        self.bootstrap = broker.bootstrap_servers
        for name in ("ingest", "processor", "archiver", "tracker", "simulator"):
            self.ports[name] = free_port()
        self.simulator = self._service("simulator", self._simulator_command(), dict(os.environ))
        self.simulator.spawn()
        _wait_started(self.url("simulator", "/_sim/health"), "the simulator", self.simulator)
        env = self._service_env(redis.url)
        for name in SERVICES:
            module = "ingest" if name.startswith("ingest") else name
            command = [sys.executable, "-m", f"services.{module}"]
            command += ["run"] if module in ("archiver", "tracker") else []
            service = self._service(name, command, env)
            self.targets[name] = service
            service.spawn()
        for name in ("processor", "archiver", "tracker"):
            _wait_started(self.url(name, "/readyz"), name, self._target_service(name))
        for name in ("ingest-a", "ingest-b"):
            _wait_listening(self._target_service(name), self.ports["ingest"])
        _wait_started(self.url("ingest", "/readyz"), "the ingest", self._target_service("ingest-a"))

    def stop(self) -> None:
        """Services first (they drain, all at once), then the simulator, then the servers."""
        for service in self.services:
            service.terminate()
        for service in self.services:
            service.stop()
        if self.simulator is not None:
            self.simulator.stop()
        for name in ("postgres", "redis", "broker"):
            if name in self.targets:
                self.targets[name].stop()

    def _target_service(self, name: str) -> Service:
        target = self.targets[name]
        assert isinstance(target, Service)
        return target

    def _service(self, name: str, command: list[str], env: dict[str, str]) -> Service:
        return Service(name, command, env, self.logs / f"{name}.log", self.groups)

    def _simulator_command(self) -> list[str]:
        knobs = self.knobs
        requests, window = knobs.rate_limit
        return [
            sys.executable,
            "-m",
            "devenv.simulator",
            "--port",
            str(self.ports["simulator"]),
            "--seed",
            str(knobs.seed),
            "--api-key",
            API_KEY,
            "--webhook-key",
            WEBHOOK_KEY,
            "--completion-seconds",
            str(knobs.completion_seconds),
            "--rate-limit-requests",
            str(requests),
            "--rate-limit-window",
            str(window),
            "--drop-ratio",
            str(knobs.drop),
            "--duplicate-ratio",
            str(knobs.duplicate),
            "--delay-ratio",
            str(knobs.delay),
            "--delay-seconds",
            "5",
            "--failure-ratio",
            str(knobs.failure),
            "--empty-ratio",
            str(knobs.empty),
        ]

    def _service_env(self, redis_url: str) -> dict[str, str]:
        """The embedded defaults (no setting of the caller's leaks in), plus this run's."""
        declared = {variable.name for variable in VARIABLES}
        env = {k: v for k, v in os.environ.items() if k not in declared}
        requests, window = self.knobs.rate_limit
        ingest = self.ports["ingest"]
        env.update(
            {
                "LOG_FORMAT": "json",
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_TOPIC_PARTITIONS": "3",
                "DATA_DIR": str(self.data_dir),
                "SUNO_WEBHOOK_SECRETS": WEBHOOK_KEY,
                "REDIS_URL": redis_url,
                "INGEST_HOST": "127.0.0.1",
                "INGEST_PORT": str(ingest),
                "INGEST_REUSE_PORT": "true",
                "PROCESSOR_HOST": "127.0.0.1",
                "PROCESSOR_PORT": str(self.ports["processor"]),
                # Previews take seconds of the processor's time per song (docs/processing.md):
                # the run tests what the pipeline keeps, not a machine's FluidSynth.
                "PROCESSOR_PREVIEWS": "off",
                "ARCHIVER_HOST": "127.0.0.1",
                "ARCHIVER_PORT": str(self.ports["archiver"]),
                "TRACKER_HOST": "127.0.0.1",
                "TRACKER_PORT": str(self.ports["tracker"]),
                "DATABASE_URL": self.database_url,
                "SUNO_API_BASE_URL": self.url("simulator"),
                "SUNO_API_KEY": API_KEY,
                "TRACKER_CALLBACK_URL": f"http://127.0.0.1:{ingest}/callbacks/suno/midi",
                "TRACKER_API_TOKENS": TOKEN,
                "SUNO_API_RATE_LIMIT_REQUESTS": str(requests),
                "SUNO_API_RATE_LIMIT_WINDOW_SECONDS": str(window),
                "SUNO_API_TIMEOUT_SECONDS": "5",
                "SUNO_API_BACKOFF_SECONDS": "0.2",
                "SUNO_API_BACKOFF_MAX_SECONDS": "2",
                "TRACKER_POLL_AFTER_SECONDS": str(self.knobs.poll_after_seconds),
                "TRACKER_POLL_INTERVAL_SECONDS": "2",
                "TRACKER_POLL_MAX_INTERVAL_SECONDS": "8",
                "TRACKER_LEASE_SECONDS": "10",
            }
        )
        return env

    # -- faults --------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.kills[name] += 1
        self.targets[name].kill()

    def revive(self, name: str) -> None:
        self.targets[name].revive()

    def freeze(self, name: str) -> None:
        self.freezes[name] += 1
        self.targets[name].signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.targets[name].signal(signal.SIGCONT)

    async def supervise(self) -> None:
        """Restart services that exited on their own, until cancelled."""
        while True:
            for service in self.services:
                service.supervise()
            await asyncio.sleep(_RESTART_BACKOFF_SECONDS)


def _wait_started(url: str, what: str, service: Service) -> None:
    wait_http(url, 90.0, process=service.process, name=what, log=service.log)


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a listening TCP socket on ``port`` (from /proc)."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    return True
    return False


def _wait_listening(service: Service, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = service.process
        if process is not None and process.poll() is None and _listening(process.pid, port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} did not listen on port {port} within {timeout:.0f} s")


def leftover_processes(groups: set[int]) -> list[str]:
    """Live processes (``pid command``) in any of the process groups the run started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in groups:
            found.append(f"{entry} {command.decode(errors='replace')[:120]}")
    return found
