"""A real Redis server (Debian's ``redis-server``) on a free loopback port in a temp dir.

No persistence, no config file on disk, stopped with the process group. Used by the tests
and the benchmark; also runnable for the dev runner:

    python -m devenv.redis            # run until Ctrl-C, print the REDIS_URL
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
from collections.abc import Iterator
from pathlib import Path

from .processes import free_port, kill, log_tail, stop

__all__ = ["LocalRedis", "RedisStartError", "running_redis"]


class RedisStartError(RuntimeError):
    """``redis-server`` is missing or did not start; the message says what to do."""


class LocalRedis:
    """One ``redis-server`` process; ``start()``/``stop()``, ``kill()``/``restart()``."""

    def __init__(self, *, port: int | None = None, executable: str = "redis-server") -> None:
        self.port = port or free_port()
        self.executable = executable
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
                f"{self.executable} is not installed: run `apt-get install -y redis-server` "
                "(Debian/Ubuntu) so the tests can start a real Redis"
            )
        command = [
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
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._answers_ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server did not answer within {timeout} s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines=lines)

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


@contextlib.contextmanager
def running_redis(port: int | None = None) -> Iterator[LocalRedis]:
    server = LocalRedis(port=port)
    try:
        yield server.start()
    finally:
        server.stop()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
    try:
        server = LocalRedis(port=port).start()
    except RedisStartError as exc:
        sys.exit(f"local Redis: {exc}")
    print(f"REDIS_URL={server.url} (Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
