"""What every local server launcher needs: a free port, a clean stop, its log's tail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["free_port", "kill", "log_tail", "stop"]


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
