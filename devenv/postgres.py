"""A real PostgreSQL server (Debian's ``postgresql`` package) on a free loopback port.

Used by the tests (a throwaway cluster in a temp dir, durability traded for speed) and by
the dev runner (a cluster kept in ``./data/postgres`` across runs):

    python -m devenv.postgres           # run until Ctrl-C on port 5432, print the DATABASE_URL
    python -m devenv.postgres 55432     # the same on another port

``postgres`` refuses to run as root, and CI runs as root: then initdb and the server run
as the unprivileged ``postgres`` user Debian's package creates, owning the data dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .processes import free_port, kill, log_tail, stop

__all__ = ["LocalPostgres", "PostgresStartError", "postgres_bin_dir", "running_postgres"]

INSTALL_HINT = "install Debian's postgresql: scripts/bootstrap.sh (or apt-get install postgresql)"
SUPERUSER = "postgres"
#: Durability off: a crash loses a throwaway test cluster, never data anyone keeps.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
PERSISTENT_DIR = Path("data/postgres")


class PostgresStartError(RuntimeError):
    """PostgreSQL is missing or did not start; the message has the log tail and what to do."""


def postgres_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The ``bin`` folder of the highest PostgreSQL major version Debian installed."""
    versions = [p for p in root.glob("*/bin") if p.parent.name.isdigit()] if root.is_dir() else []
    if not versions:
        raise PostgresStartError(f"no PostgreSQL server under {root}: {INSTALL_HINT}")
    return max(versions, key=lambda p: int(p.parent.name))


def _run_as() -> str | None:
    """The user to run the server as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresStartError(
            f"running as root, PostgreSQL must run as the {SUPERUSER!r} user, which does not "
            f"exist: {INSTALL_HINT}"
        ) from None
    return SUPERUSER


class LocalPostgres:
    """One ``postgres`` server; ``start()``/``stop()``, ``kill()``/``restart()``, a context.

    Without ``data_dir`` the cluster lives in a temp dir, with the fast test settings unless
    ``fast=False``, and ``stop()`` deletes it; with one, the cluster is created there on
    first start, kept, and fully durable.
    """

    def __init__(
        self, *, port: int | None = None, data_dir: Path | None = None, fast: bool | None = None
    ) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        #: Durability off (``FAST``): by default for a temp dir only. A test that kills the
        #: server and expects its commits back passes ``fast=False``.
        self.fast = self._own_dir if fast is None else fast
        self.workdir = (data_dir or Path(tempfile.mkdtemp(prefix="suno-postgres-"))).absolute()
        self.pgdata = self.workdir / "pgdata"
        self.socket_dir = self.workdir / "run"
        self.log_file = self.workdir / "postgres.log"
        self.user: str | None = None  # who runs it: set by start()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """Start (creating the cluster on first use); a failed start leaves no process and,
        for a temp dir, no folder behind."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> LocalPostgres:
        bin_dir = postgres_bin_dir()
        self.user = _run_as()
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir)
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.socket_dir}",
            "max_connections=200",
            *(FAST if self.fast else ()),
        ]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.pgdata)]
                + [arg for s in settings for arg in ("-c", s)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
            )
        self._wait_ready(timeout)
        return self

    def _prepare_dirs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.user is None:
            return
        for path in (self.workdir, self.socket_dir, *self._existing(self.pgdata)):
            shutil.chown(path, self.user, self.user)
        probe = subprocess.run(
            ["test", "-w", str(self.workdir)], user=self.user, check=False, capture_output=True
        )
        if probe.returncode != 0:
            raise PostgresStartError(
                f"the {self.user!r} user cannot reach {self.workdir} (a parent folder is not "
                "world-searchable): give its parents o+x or use another data dir"
            )

    @staticmethod
    def _existing(root: Path) -> Iterator[Path]:
        if root.exists():
            yield root
            yield from root.rglob("*")

    def _initdb(self, bin_dir: Path) -> None:
        done = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                *(("--no-sync",) if self.fast else ()),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
        )
        if done.returncode != 0:
            raise PostgresStartError(
                f"initdb failed (exit {done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"{INSTALL_HINT}"
            )

    def _wait_ready(self, timeout: float) -> None:
        """Until *our* postmaster says it is ready (not any server on the port: a second
        one on a taken port must fail, not pass for the first)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise PostgresStartError(
                    f"postgres exited with code {code}:\n{self.log_tail()}\n"
                    f"is port {self.port} taken? else {INSTALL_HINT}"
                )
            if self._status() == (str(self.process.pid), "ready"):
                return
            time.sleep(0.05)
        raise PostgresStartError(f"postgres was not ready within {timeout} s:\n{self.log_tail()}")

    def _status(self) -> tuple[str, str] | None:
        """(pid, status) from ``postmaster.pid``, whose 8th line becomes "ready" once the
        server accepts connections."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return (lines[0].strip(), lines[7].strip()) if len(lines) >= 8 else None

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines=lines)

    def kill(self) -> None:
        """SIGKILL the whole server (crash tests); ``restart()`` recovers the same cluster."""
        process, self.process = self.process, None
        kill(process)

    def restart(self, timeout: float = 60.0) -> LocalPostgres:
        self.kill()
        return self.start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT: clients are disconnected, not waited for), then a kill."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        stop(process, 5)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_postgres(port: int | None = None) -> Iterator[LocalPostgres]:
    server = LocalPostgres(port=port)
    try:
        yield server.start()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """``[port]``: one durable server on ``./data/postgres`` until Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and not re.fullmatch(r"\d+", args[0])):
        sys.exit("usage: python -m devenv.postgres [port]")
    server = LocalPostgres(port=int(args[0]) if args else 5432, data_dir=PERSISTENT_DIR)
    try:
        server.start()
    except PostgresStartError as exc:
        sys.exit(f"local PostgreSQL: {exc}")
    print(f"DATABASE_URL={server.url} (data in {server.workdir}; Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
