"""The whole system on one machine: a local Kafka broker, a local PostgreSQL, the provider
simulator, the four services (ingest, processor, archiver, tracker) and the console.

    python -m devenv.pipeline        # what `make run` does
    make demo                        # then: three tasks, one recovered by polling

Honours the services' environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL,
SUNO_API_BASE_URL, DATA_DIR, INGEST_PORT, ...): with KAFKA_BOOTSTRAP_SERVERS set it uses
that cluster instead of starting a broker, with DATABASE_URL that database, and with
SUNO_API_BASE_URL (and SUNO_API_KEY) the provider there instead of the simulator.
Ctrl-C (or SIGTERM) stops the services, then the servers, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.common.main import load_settings

from .kafka import BrokerStartError, LocalKafka
from .local_key import KEY_FILE, TOKEN_FILE, ensure_local_key, read_local_key
from .postgres import LocalPostgres, PostgresStartError
from .processes import free_port, stop, wait_http

SERVICES = (
    ("ingest", [sys.executable, "-m", "services.ingest"]),
    ("processor", [sys.executable, "-m", "services.processor"]),
    ("archiver", [sys.executable, "-m", "services.archiver", "run"]),
    ("tracker", [sys.executable, "-m", "services.tracker", "run"]),
    ("console", [sys.executable, "-m", "services.console"]),
)
#: The simulator's API key (it stands in for the provider: nothing to protect).
SIMULATOR_API_KEY = "sim-api-key"
SIMULATOR_PORT = 8090
#: A local task with no result is polled this soon (production: TRACKER_POLL_AFTER_SECONDS,
#: 5 minutes), so that `make demo` shows a recovery by polling within a minute.
LOCAL_POLL_AFTER_SECONDS = "15"


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
    database: LocalPostgres | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            port = 9092 if _port_free(9092) else free_port()
            print(f"starting Apache Kafka (local, KRaft) on 127.0.0.1:{port} ...", flush=True)
            broker = LocalKafka(port=port, data_dir=data_dir / "kafka").start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        if not env.get("DATABASE_URL"):
            port = 5432 if _port_free(5432) else free_port()
            print(f"starting PostgreSQL (local) on 127.0.0.1:{port} ...", flush=True)
            database = LocalPostgres(port=port, data_dir=data_dir / "postgres").start()
            env["DATABASE_URL"] = database.url
        ports = {
            "ingest": settings.ingest.port,
            "processor": settings.processor.port,
            "archiver": settings.archiver.port,
            "tracker": settings.tracker.port,
            "console": settings.console.port,
        }
        provider = _provider(env, data_dir, processes)
        _tracker_env(env, data_dir, ports["ingest"])
        _console_env(env, ports)
        for name, command in SERVICES:
            process = subprocess.Popen(
                command, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )
            processes.append((name, process))
        for name, process in processes:
            if name in ports:
                wait_http(f"http://127.0.0.1:{ports[name]}/readyz", 60, process=process, name=name)
        write_run_file(
            data_dir,
            {
                "tracker": f"http://127.0.0.1:{ports['tracker']}",
                "ingest": f"http://127.0.0.1:{ports['ingest']}",
                "console": f"http://127.0.0.1:{ports['console']}",
                "provider": env["SUNO_API_BASE_URL"],
                "database": env["DATABASE_URL"],
                "simulated": provider.startswith("the simulator"),
            },
        )
        ingest = f"http://127.0.0.1:{ports['ingest']}"
        tracker = f"http://127.0.0.1:{ports['tracker']}"
        print(
            "\n".join(
                [
                    "",
                    "The pipeline is running.",
                    f"  Kafka:      {env['KAFKA_BOOTSTRAP_SERVERS']}",
                    f"  PostgreSQL: {env['DATABASE_URL']} (the task registry)",
                    f"  provider:   {provider}",
                    f"  POST callbacks to {ingest}/callbacks/suno/midi",
                    signing,
                    f"  request MIDI: POST {tracker}/v1/midi/requests (Bearer token in "
                    f"{data_dir / TOKEN_FILE}), or suno-tracker submit <separation task id>",
                    "  watch the tasks: suno-tracker tasks (DATABASE_URL as above)",
                    f"  MIDI files:  {data_dir / 'midi'}/<task key>.mid",
                    f"  raw archive: {data_dir / 'raw'}/<task key>/<sha256>.json",
                    f"  metrics:     {ingest}/metrics, :{ports['processor']}/metrics, "
                    f":{ports['archiver']}/metrics, :{ports['tracker']}/metrics",
                    "  send a sample: make send-example",
                    "  see a task's whole life: make demo (three tasks; one recovered by polling)",
                    f"  console:     http://127.0.0.1:{ports['console']}/ (every task, its "
                    "notes and history; the services' health)",
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
    except (BrokerStartError, PostgresStartError, RuntimeError) as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(processes)
        if database is not None:
            database.stop()
        if broker is not None:
            broker.stop()
        print("stopped.", flush=True)


def _provider(
    env: dict[str, str], data_dir: Path, processes: list[tuple[str, subprocess.Popen[bytes]]]
) -> str:
    """The provider the tracker talks to: SUNO_API_BASE_URL if set, else the simulator,
    started here (signing its callbacks with the ingest's key); what to print about it."""
    if env.get("SUNO_API_BASE_URL"):
        return f"{env['SUNO_API_BASE_URL']} (SUNO_API_BASE_URL)"
    port = SIMULATOR_PORT if _port_free(SIMULATOR_PORT) else free_port()
    command = [sys.executable, "-m", "devenv.simulator", "--port", str(port)]
    command += ["--api-key", SIMULATOR_API_KEY]
    key = env.get("SUNO_WEBHOOK_SECRETS", "").split(",")[0].strip()
    if key and key == read_local_key(data_dir):
        command += ["--webhook-key-file", str(data_dir / KEY_FILE)]  # kept out of `ps`
    elif key:
        command += ["--webhook-key", key]
    simulator = subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=_die_with_parent
    )
    processes.append(("simulator", simulator))
    wait_http(f"http://127.0.0.1:{port}/_sim/health", 30, process=simulator, name="simulator")
    env["SUNO_API_BASE_URL"] = f"http://127.0.0.1:{port}"
    env.setdefault("SUNO_API_KEY", SIMULATOR_API_KEY)
    env.setdefault("TRACKER_POLL_AFTER_SECONDS", LOCAL_POLL_AFTER_SECONDS)
    env.setdefault("TRACKER_POLL_INTERVAL_SECONDS", "5")
    return f"the simulator at {env['SUNO_API_BASE_URL']} (devenv/simulator; docs/simulator.md)"


#: What a running `make run` started, for `make demo` and other local tools.
RUN_FILE = "local-run.json"


def write_run_file(data_dir: Path, facts: dict[str, object]) -> None:
    (data_dir / RUN_FILE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")


def _tracker_env(env: dict[str, str], data_dir: Path, ingest_port: int) -> None:
    """Our public callback URL (the local ingest) and a local API token."""
    env.setdefault("TRACKER_CALLBACK_URL", f"http://127.0.0.1:{ingest_port}/callbacks/suno/midi")
    env.setdefault("TRACKER_API_TOKENS", ensure_local_key(data_dir, TOKEN_FILE))


def _console_env(env: dict[str, str], ports: dict[str, int]) -> None:
    """The console's health strip reads the local services' own /metrics."""
    services = ("processor", "archiver", "tracker", "ingest")
    urls = ",".join(f"{name}=http://127.0.0.1:{ports[name]}/metrics" for name in services)
    env.setdefault("CONSOLE_METRICS_URLS", urls)


if __name__ == "__main__":
    main()
