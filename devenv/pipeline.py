"""The whole pipeline on one machine: a local Kafka broker and the three services.

    python -m devenv.pipeline        # what `make run` does

Honours the services' environment (KAFKA_BOOTSTRAP_SERVERS, DATA_DIR, INGEST_PORT, ...):
with KAFKA_BOOTSTRAP_SERVERS set it uses that cluster instead of starting a broker.
Ctrl-C (or SIGTERM) stops the services, then the broker, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from services.common.main import load_settings

from .kafka import BrokerStartError, LocalKafka
from .local_key import KEY_FILE, ensure_local_key
from .processes import free_port, stop

SERVICES = (
    ("ingest", [sys.executable, "-m", "services.ingest"]),
    ("processor", [sys.executable, "-m", "services.processor"]),
    ("archiver", [sys.executable, "-m", "services.archiver", "run"]),
)


def _die_with_parent() -> None:
    """Children get SIGTERM if this runner dies abruptly (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_ready(name: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} was not ready at {url} within {timeout:.0f} s")


def _stop(processes: list[tuple[str, subprocess.Popen[bytes]]], timeout: float = 20.0) -> None:
    """SIGTERM every service at once (they drain in parallel), then wait for each."""
    for _, process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for _, process in processes:
        stop(process, max(0.1, deadline - time.monotonic()))


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _signing(env: dict[str, str], data_dir: Path, allow_unsigned: bool) -> str:
    """Give the services a webhook key unless one is set or unsigned callbacks are opted
    into; what to print about it."""
    if env.get("SUNO_WEBHOOK_SECRETS", "").replace(",", "").strip():
        return "  webhook key: the first of SUNO_WEBHOOK_SECRETS (make send-example signs with it)"
    if allow_unsigned:
        # Unsigned callbacks make UNVERIFIED events: the processor must take them too.
        env.setdefault("PROCESSOR_REQUIRE_VERIFIED", "false")
        return (
            "  webhook key: none, unsigned callbacks accepted (INGEST_ALLOW_UNSIGNED=true, "
            f"PROCESSOR_REQUIRE_VERIFIED={env['PROCESSOR_REQUIRE_VERIFIED']})"
        )
    env["SUNO_WEBHOOK_SECRETS"] = ensure_local_key(data_dir)
    return (
        f"  webhook key: {env['SUNO_WEBHOOK_SECRETS']} (generated for local use, kept in "
        f"{data_dir / KEY_FILE}; make send-example signs with it)"
    )


def main() -> None:
    settings = load_settings("pipeline")
    env = dict(os.environ)
    env.setdefault("DATA_DIR", str(settings.storage.data_dir))
    data_dir = Path(env["DATA_DIR"]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    signing = _signing(env, data_dir, settings.ingest.allow_unsigned)

    # Installed explicitly: a runner started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    broker: LocalKafka | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            port = 9092 if _port_free(9092) else free_port()
            print(f"starting Apache Kafka (local, KRaft) on 127.0.0.1:{port} ...", flush=True)
            broker = LocalKafka(port=port, data_dir=data_dir / "kafka").start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        ports = {
            "ingest": settings.ingest.port,
            "processor": settings.processor.port,
            "archiver": settings.archiver.port,
        }
        for name, command in SERVICES:
            process = subprocess.Popen(
                command, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )
            processes.append((name, process))
        for name, process in processes:
            _wait_ready(name, ports[name], process, timeout=60)
        ingest = f"http://127.0.0.1:{ports['ingest']}"
        print(
            "\n".join(
                [
                    "",
                    "The pipeline is running.",
                    f"  Kafka:      {env['KAFKA_BOOTSTRAP_SERVERS']}",
                    f"  POST callbacks to {ingest}/callbacks/suno/midi",
                    signing,
                    f"  MIDI files:  {data_dir / 'midi'}/<task key>.mid",
                    f"  raw archive: {data_dir / 'raw'}/<task key>/<sha256>.json",
                    f"  metrics:     {ingest}/metrics, :{ports['processor']}/metrics, "
                    f":{ports['archiver']}/metrics",
                    "  send a sample: make send-example",
                    "Ctrl-C stops everything.",
                    "",
                ]
            ),
            flush=True,
        )
        while all(process.poll() is None for _, process in processes):
            time.sleep(0.5)
        for name, process in processes:
            if process.poll() is not None:
                print(f"{name} exited with code {process.returncode}: stopping", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except (BrokerStartError, RuntimeError) as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(processes)
        if broker is not None:
            broker.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
