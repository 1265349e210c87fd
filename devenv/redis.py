"""Real Redis servers (Debian's ``redis-server``, ``redis-sentinel``) on free loopback ports.

One server (:class:`LocalRedis`), a Cluster of three primaries (:class:`LocalRedisCluster`),
or a primary, a replica and three Sentinels (:class:`LocalRedisSentinel`): no persistence,
temp dirs, stopped with their process groups. Used by the tests and the benchmark; also
runnable for the dev runner:

    python -m devenv.redis            # run until Ctrl-C, print the REDIS_URL
    python -m devenv.redis cluster    # the same for a Cluster (or: sentinel)
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .processes import free_port, kill, log_tail, stop

__all__ = [
    "LocalRedis",
    "LocalRedisCluster",
    "LocalRedisSentinel",
    "LocalSentinel",
    "RedisStartError",
    "running_redis",
]


class RedisStartError(RuntimeError):
    """``redis-server`` is missing or did not start; the message says what to do."""


class LocalRedis:
    """One ``redis-server`` process; ``start()``/``stop()``, ``kill()``/``restart()``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        executable: str = "redis-server",
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.executable = executable
        self.extra = tuple(extra)
        self.workdir = Path(tempfile.mkdtemp(prefix="suno-redis-"))
        self.log_file = self.workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        binary = shutil.which(self.executable)
        if binary is None:
            raise RedisStartError(
                f"{self.executable} is not installed: run `apt-get install -y {self.executable}` "
                "(Debian/Ubuntu; scripts/bootstrap.sh --test does) so the tests can start it"
            )
        self.process = subprocess.Popen(
            self._command(binary),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(
                    f"{self.executable} exited with code {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            if self._answers_ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"{self.executable} did not answer within {timeout} s")

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.log_file),
            *self.extra,
        ]

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines=lines)

    def ask(self, *command: str) -> str:
        """One command through ``redis-cli``, its reply as text ("" when it did not answer)."""
        binary = shutil.which("redis-cli") or "redis-cli"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [binary, "-h", "127.0.0.1", "-p", str(self.port), *command],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            return done.stdout
        return ""

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` (or ``CLUSTER INFO`` for "cluster") as a dict."""
        reply = self.ask("cluster", "info") if section == "cluster" else self.ask("info", section)
        pairs = (line.strip().partition(":") for line in reply.splitlines())
        return {key: value for key, sep, value in pairs if sep}

    def kill(self) -> None:
        """Stop abruptly (outage tests); ``restart()`` brings it back on the same port."""
        process, self.process = self.process, None
        kill(process)

    def restart(self) -> LocalRedis:
        self.kill()
        return self.start()

    def stop(self) -> None:
        process, self.process = self.process, None
        stop(process, 5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _until(condition: Callable[[], bool], timeout: float, what: str, logs: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RedisStartError(f"{what} did not happen within {timeout} s\n{logs}")
        time.sleep(0.1)


class LocalRedisCluster:
    """A Redis Cluster of three primaries (no replicas), slots split by ``redis-cli``.

    ``url`` names all three as seed nodes, as ``REDIS_MODE=cluster`` reads ``REDIS_URL``.
    """

    def __init__(self, size: int = 3) -> None:
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        # The bus port is set, not left at port + 10000 (which may exceed 65535).
        self.nodes = [
            LocalRedis(extra=(*cluster, "--cluster-port", str(free_port()))) for _ in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            create = subprocess.run(
                [
                    shutil.which("redis-cli") or "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if create.returncode != 0:
                raise RedisStartError(f"redis-cli --cluster create failed:\n{create.stdout}")
            _until(
                lambda: all(
                    node.info("cluster").get("cluster_state") == "ok" for node in self.nodes
                ),
                timeout,
                "the cluster's state becoming ok",
                self.log_tail(),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self) -> str:
        return "\n".join(node.log_tail(10) for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class LocalSentinel(LocalRedis):
    """One ``redis-sentinel`` watching ``master`` (it rewrites its config file as it learns)."""

    def __init__(self, master: str, master_port: int, *, quorum: int = 2) -> None:
        super().__init__(executable="redis-sentinel")
        self.master = master
        self.master_port = master_port
        self.quorum = quorum

    def _command(self, binary: str) -> list[str]:
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"logfile {self.log_file}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.master} 1000\n"
            f"sentinel failover-timeout {self.master} 5000\n"
        )
        return [binary, str(config)]


class LocalRedisSentinel:
    """A primary, one replica and three Sentinels (quorum 2), as in a small production set-up.

    ``url`` names the Sentinels, as ``REDIS_MODE=sentinel`` reads ``REDIS_URL``;
    :meth:`fail_over` kills the primary and returns once the Sentinels promoted the replica.
    """

    def __init__(self, master: str = "mymaster") -> None:
        self.master = master
        primary = LocalRedis()
        self.servers = [
            primary,
            LocalRedis(extra=("--replicaof", "127.0.0.1", str(primary.port))),
        ]
        self.sentinels = [LocalSentinel(master, primary.port) for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def primary(self) -> LocalRedis | None:
        """The server the first Sentinel names as primary now (``None``: it names none)."""
        reply = self.sentinels[0].ask("sentinel", "get-master-addr-by-name", self.master).split()
        port = reply[1] if len(reply) == 2 else ""
        return next((server for server in self.servers if str(server.port) == port), None)

    def start(self, timeout: float = 30.0) -> LocalRedisSentinel:
        try:
            for server in (*self.servers, *self.sentinels):
                server.start()
            _until(self._settled, timeout, "the Sentinels finding each other", self.log_tail())
        except BaseException:
            self.stop()
            raise
        return self

    def _settled(self) -> bool:
        """The replica is in sync and every Sentinel sees the replica and the others."""
        if self.servers[1].info("replication").get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            reply = sentinel.ask("sentinel", "master", self.master).split()
            state = dict(zip(reply[::2], reply[1::2], strict=False))
            if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                return False
        return True

    def fail_over(self, *, kill: bool = True, timeout: float = 60.0) -> LocalRedis:
        """Kill the primary (``kill``) or ask for ``SENTINEL FAILOVER`` (the old primary
        stays up, demoted); return the replica once the Sentinels made it primary."""
        old = self.primary()
        if old is None:
            raise RedisStartError(f"the Sentinels name no primary\n{self.log_tail()}")
        if kill:
            old.kill()
        elif "OK" not in self.sentinels[0].ask("sentinel", "failover", self.master):
            raise RedisStartError(f"SENTINEL FAILOVER was refused\n{self.log_tail()}")
        new = next(server for server in self.servers if server is not old)
        _until(
            lambda: self.primary() is new and new.info("replication").get("role") == "master",
            timeout,
            "the failover",
            self.log_tail(),
        )
        if not kill:  # only once demoted does the old primary refuse writes (READONLY)
            _until(
                lambda: old.info("replication").get("role") == "slave",
                timeout,
                "the old primary's demotion",
                self.log_tail(),
            )
        return new

    def log_tail(self) -> str:
        return "\n".join(s.log_tail(10) for s in (*self.servers, *self.sentinels))

    def stop(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.stop()

    def __enter__(self) -> LocalRedisSentinel:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_redis(port: int | None = None) -> Iterator[LocalRedis]:
    server = LocalRedis(port=port)
    try:
        yield server.start()
    finally:
        server.stop()


def main() -> None:
    """``[port]``: one server; ``cluster`` or ``sentinel``: that topology on free ports."""
    what = sys.argv[1] if len(sys.argv) > 1 else "6379"
    topology: LocalRedis | LocalRedisCluster | LocalRedisSentinel
    if what == "cluster":
        topology, settings = LocalRedisCluster(), "REDIS_MODE=cluster "
    elif what == "sentinel":
        topology, settings = LocalRedisSentinel(), "REDIS_MODE=sentinel "
    elif what.isdigit():
        topology, settings = LocalRedis(port=int(what)), ""
    else:
        sys.exit("usage: python -m devenv.redis [port | cluster | sentinel]")
    try:
        topology.start()
    except RedisStartError as exc:
        sys.exit(f"local Redis: {exc}")
    print(f"{settings}REDIS_URL={topology.url} (Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        topology.stop()


if __name__ == "__main__":
    main()
