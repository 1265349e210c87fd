"""What every local server launcher needs: a free port, a wait until it answers, a clean
stop, its log's tail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

__all__ = ["free_port", "kill", "log_tail", "stop", "wait_http"]


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str,
    timeout: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    name: str | None = None,
    log: Path | None = None,
) -> None:
    """Returns once ``url`` answers 200. Raises :class:`RuntimeError`, naming ``name`` (or
    the URL), after ``timeout`` seconds, or as soon as ``process`` (the server starting)
    exits, then with the tail of its ``log``."""
    what = name or url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = "" if log is None else f":\n{log_tail(log)}"
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer 200 at {url} within {timeout:.0f} s")


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def stop(process: subprocess.Popen[bytes] | None, timeout: float, *, group: bool = True) -> None:
    """SIGTERM (to the process group, for servers started with ``start_new_session``), then
    SIGKILL after ``timeout`` seconds; returns once the process is gone."""
    if process is None or process.poll() is not None:
        return
    _signal(process, signal.SIGTERM, group)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL, group)
        process.wait()


def kill(process: subprocess.Popen[bytes] | None, *, group: bool = True) -> None:
    """SIGKILL at once (outage and crash tests); returns once the process is gone."""
    if process is None or process.poll() is not None:
        return
    _signal(process, signal.SIGKILL, group)
    process.wait()


def log_tail(*paths: Path, lines: int = 40) -> str:
    """The last ``lines`` of each log that exists, headed by its path."""
    texts = []
    for path in paths:
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            texts.append(f"--- {path}\n" + "\n".join(tail))
    return "\n".join(texts) or "(no log written)"
