"""``make run`` then ``make demo``, as a user runs them: the whole system starts, three
tasks live their lives (one recovered by polling), and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from devenv.processes import free_port

from ..brokers import Broker

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def check_console(data_dir: Path, port: str) -> None:
    """The console answers at the URL the runner wrote, its health strip reading every
    local service's /metrics."""
    url = json.loads((data_dir / "local-run.json").read_text())["console"]
    assert url == f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{url}/", timeout=10) as page:
        assert b"MIDI console" in page.read()
    with urllib.request.urlopen(f"{url}/api/v1/health", timeout=10) as answer:
        health = json.load(answer)
    assert health["source"] == "metrics"
    statuses = {service["name"]: service["status"] for service in health["services"]}
    assert statuses == dict.fromkeys(("processor", "archiver", "tracker", "ingest"), "ok")


def test_make_run_and_make_demo(kafka_broker: Broker, database_url: str, tmp_path: Path) -> None:
    """The runner on the session's Kafka and a fresh database (as with those variables
    set), everything else its own: the demo ends 0, its lost task recovered by a poll."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        **{
            f"KAFKA_TOPIC_{name}": f"run.{suffix}.{name.lower()}"
            for name in ("CALLBACKS", "NOTES", "DLQ", "REQUESTS")
        },
        **{
            f"{service}_PORT": str(free_port())
            for service in ("INGEST", "PROCESSOR", "ARCHIVER", "TRACKER", "CONSOLE")
        },
        **{
            f"{service}_GROUP_ID": f"run-{suffix}-{service.lower()}"
            for service in ("PROCESSOR", "ARCHIVER", "TRACKER")
        },
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "devenv.pipeline"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert runner.stdout is not None
        deadline = time.monotonic() + 120
        while "The pipeline is running." not in lines and time.monotonic() < deadline:
            line = runner.stdout.readline()
            if not line and runner.poll() is not None:
                break
            lines.append(line.rstrip("\n"))
        assert "The pipeline is running." in lines, "\n".join(lines[-30:])
        children = descendants(runner.pid)
        assert len(children) >= 6  # the simulator, the four services and the console
        check_console(tmp_path / "data", env["CONSOLE_PORT"])
        demo = subprocess.run(
            [sys.executable, "-m", "devenv.demo", "--timeout", "90"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        lost = [line for line in demo.stdout.splitlines() if line.strip().startswith("lost:")]
        assert any("result by poll" in line for line in lost), demo.stdout
        assert len(list((tmp_path / "data" / "midi").glob("*.mid"))) == 2
    finally:
        if runner.poll() is None:
            os.kill(runner.pid, signal.SIGINT)
        rest, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0 and rest.rstrip().endswith("stopped."), rest[-2000:]
    assert not [child for child in children if alive(child)], "processes left behind"
