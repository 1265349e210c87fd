"""Ingest benchmark: the full path against a bare aiohttp handler, same machine, same run.

Full path = Content-Type/size checks, JSON parse, signature verification, dedupe claim and
completion in a real Redis, and a publish acknowledged by a real Kafka broker (acks=all).
Peak throughput and latency come from wrk (``apt-get install -y wrk``) with a Lua script
that sends a distinct, correctly signed callback per request. wrk cannot hold a fixed rate
(wrk2 is not in Debian), so the latency at half the peak rate comes from vegeta (Go, built
by ``scripts/ensure-go-tool.sh``), an open-loop generator that keeps a fixed schedule.

    .venv/bin/python -m bench.ingest.run              # all sizes, ~4 minutes
    .venv/bin/python -m bench.ingest.run --sizes 10KB --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devenv.kafka import LocalKafka
from devenv.processes import free_port
from devenv.redis import LocalRedis
from services.ingest.verify import sign

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KEY = "bench-webhook-key"
SIZES = {"1KB": 1024, "10KB": 10 * 1024, "100KB": 100 * 1024, "1MB": 1024 * 1024}
PLACEHOLDER = "@@TASK@@"


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: str


@dataclass
class RateResult:
    rate: float
    sent: int
    ok: int
    p50_ms: float
    p99_ms: float
    #: Every answer that was not a 200, by status ("0": no answer), and vegeta's errors.
    other: dict[str, int]
    errors: list[str]


def body_parts(size: int, task_key: str = "task_id") -> tuple[bytes, bytes]:
    """A realistic callback (notes of one instrument) of ``size`` bytes around the task id
    (at ``task_key``, top level)."""
    note = {"pitch": 60, "start": 7.6875, "end": "7.911458333333333", "velocity": 0.8}
    payload = {
        task_key: PLACEHOLDER,
        "code": 200,
        "msg": "success",
        "data": {
            "state": "complete",
            "instruments": [{"name": "Acoustic Grand Piano", "notes": []}],
        },
    }
    notes: list[dict[str, object]] = payload["data"]["instruments"][0]["notes"]  # type: ignore[index]
    one = len(json.dumps(note)) + 2
    notes.extend(dict(note) for _ in range(max(0, (size - 200) // one)))
    text = json.dumps(payload)
    pad = size - (len(text) - len(PLACEHOLDER) + 24)  # task ids are 24 characters
    if pad > 0:
        payload["msg"] = "success" + " " * pad
        text = json.dumps(payload)
    prefix, suffix = text.split(PLACEHOLDER)
    return prefix.encode(), suffix.encode()


def write_requests(
    folder: Path, size: int, count: int, tag: str, task_key: str = "task_id"
) -> None:
    """prefix/suffix/signed files for post.lua: ``count`` distinct signed task ids."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix, suffix = body_parts(size, task_key)
    (folder / "prefix").write_bytes(prefix)
    (folder / "suffix").write_bytes(suffix)
    now = int(time.time())
    run = uuid.uuid4().hex[:6]
    lines = []
    for i in range(count):
        task = f"{tag}-{run}-{i:010d}"[:24].ljust(24, "x")
        lines.append(f"{task} {now} {sign(KEY.encode(), task, now)}")
    (folder / "signed").write_text("\n".join(lines) + "\n")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str,
    folder: Path,
    *,
    duration: float,
    connections: int,
    threads: int,
    pause_ms: int = 0,
) -> WrkResult:
    """wrk at full speed, or with each connection pausing ``pause_ms`` between requests."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        url,
        "--",
        str(folder),
        str(threads),
        str(pause_ms),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percent = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    nan = float("nan")
    return WrkResult(
        rps=rps,
        requests=total,
        p50_ms=_ms(percent["50"]) if "50" in percent else nan,
        p99_ms=_ms(percent["99"]) if "99" in percent else nan,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=errors.group(1) if errors else "",
    )


def open_loop(
    vegeta: str,
    url: str,
    folder: Path,
    *,
    rate: float,
    duration: float,
    results_to: Path | None = None,
    workers: int | None = None,
) -> RateResult:
    """Open loop, by vegeta: requests leave at a fixed rate whatever the answers' pace.

    A closed-loop client (wrk, or any fixed set of connections waiting for answers) sends
    less when the server slows down and so hides its stalls ("coordinated omission");
    vegeta keeps the schedule, adding workers when answers are late. It is Go, so it takes
    little of the two cores the ingest, Kafka and Redis share (a Python client took most of
    one at these rates, which the ingest's latency then paid for).

    ``results_to``: vegeta's per-request results are kept there, and each request's URL
    names its task (``?task=<id>``), so a result can be matched to what the task made.
    ``workers``: closed loop at full speed instead, that many requests in flight for
    ``duration`` (``rate`` is then ignored; the result's rate is the throughput achieved).
    """
    prefix, suffix = (folder / "prefix").read_bytes(), (folder / "suffix").read_bytes()
    entries = [line.split() for line in (folder / "signed").read_text().splitlines()]
    total = len(entries) if workers else min(int(rate * duration), len(entries))
    targets = folder / "targets.jsonl"
    with targets.open("w") as out:
        # A few more targets than the schedule needs: vegeta's last tick may round up, and a
        # hit without a target would count as an error that the ingest never saw.
        for task, ts, sig in entries[: total + int(rate) + 1]:
            target = {
                "method": "POST",
                "url": url if results_to is None else f"{url}?task={task}",
                "body": base64.b64encode(prefix + task.encode() + suffix).decode(),
                "header": {
                    "Content-Type": ["application/json"],
                    "X-Webhook-Timestamp": [ts],
                    "X-Webhook-Signature": [sig],
                },
            }
            out.write(json.dumps(target) + "\n")
    results = folder / "results.bin"
    subprocess.run(
        [
            vegeta,
            "attack",
            "-format=json",
            "-lazy",
            f"-targets={targets}",
            *(
                ["-rate=0", f"-workers={workers}", f"-max-workers={workers}"]
                if workers
                else [f"-rate={rate:.0f}/s"]
            ),
            f"-duration={duration if workers else total / rate:.3f}s",
            "-timeout=15s",
            f"-output={results}",
        ],
        check=True,
    )
    report = subprocess.run(
        [vegeta, "report", "-type=json", str(results)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary = json.loads(report)
    targets.unlink()
    if results_to is None:
        results.unlink()
    else:
        results.replace(results_to)
    return RateResult(
        rate=float(summary["throughput"]) if workers else rate,
        sent=int(summary["requests"]),
        ok=int(summary["status_codes"].get("200", 0)),
        p50_ms=summary["latencies"]["50th"] / 1e6,
        p99_ms=summary["latencies"]["99th"] / 1e6,
        other={k: v for k, v in summary["status_codes"].items() if k != "200"},
        errors=list(summary.get("errors") or []),
    )


async def publish_ceiling(bootstrap: str, topic: str, size: int, seconds: float = 5.0) -> float:
    """Kafka alone: acks=all publishes/s of ``size``-byte callback bodies from 64 senders.

    The same producer settings the ingest uses, nothing else in the way: the ceiling no
    HTTP front end built on this client can pass on this machine.
    """
    from services.common.kafka import Publisher
    from services.common.settings import KafkaSettings

    prefix, suffix = body_parts(size)
    publisher = Publisher(KafkaSettings(bootstrap_servers=bootstrap), "bench")
    await publisher.start()
    done = 0
    stop = time.monotonic() + seconds
    try:

        async def sender(worker: int) -> None:
            nonlocal done
            while time.monotonic() < stop:
                body = prefix + f"ceiling-{worker}-{done}".encode() + suffix
                await publisher.publish(topic, key=b"%d" % worker, value=body, timeout=10)
                done += 1

        await asyncio.gather(*(sender(i) for i in range(64)))
    finally:
        await publisher.stop()
    return done / seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def scrape_outcomes(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        outcome: float(value)
        for outcome, value in re.findall(
            r'^ingest_requests_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE
        )
        if float(value)
    }


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path, cpus: set[int] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Ingest variants the bench can run side by side (``--variants``): extra environment for
#: the ingest process, applied by :mod:`bench.ingest.variant` where it is not a setting.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    # aiohttp's pure-Python HTTP parser instead of its C one (shows the C one is in use).
    "py-parser": {"AIOHTTP_NO_EXTENSIONS": "1"},
    # INGEST_EVENT_LOOP: uvloop is the default, asyncio's own loop the alternative.
    "asyncio": {"INGEST_EVENT_LOOP": "asyncio"},
    "uvloop": {"INGEST_EVENT_LOOP": "uvloop"},
    "hiredis": {"BENCH_REDIS_PARSER": "hiredis"},
}


@dataclass
class Peak:
    """One server's peak run at one size: wrk's figures and the server's CPU per request."""

    wrk: WrkResult
    cpu_per_request: float
    #: CPU per request at the ``--paced`` rate (median round), if measured.
    paced_cpu: float | None = None


def measure_peak(
    url: str, pid: int, folder: Path, args: argparse.Namespace, connections: int, pause_ms: int = 0
) -> Peak:
    before = cpu_seconds(pid)
    result = run_wrk(
        url,
        folder,
        duration=args.duration,
        connections=connections,
        threads=args.threads,
        pause_ms=pause_ms,
    )
    return Peak(result, (cpu_seconds(pid) - before) / max(1, result.requests))


def paced_cpu(url: str, pid: int, folder: Path, args: argparse.Namespace) -> float:
    """CPU per request at a fixed offered rate (``--paced``, 16 pausing connections).

    On a machine others share, peak rates measure the neighbours as much as the server
    (the broker's CPU above all); the CPU a variant spends per request at one moderate
    rate, the same for every variant, moves much less.
    """
    pause = max(1, int(1000 * 16 / args.paced))
    return measure_peak(url, pid, folder, args, 16, pause_ms=pause).cpu_per_request


def warm_up(url: str, folder: Path, args: argparse.Namespace, connections: int) -> None:
    """Connections, caches, producer metadata: 3 s of the same load, not counted."""
    run_wrk(url, folder, duration=3, connections=connections, threads=args.threads)


def outcome_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(after[k] - before.get(k, 0)) for k in after if after[k] - before.get(k, 0)}


@dataclass
class Servers:
    """The processes under test, all pinned to the same CPU: ingest variants, bare, Flask."""

    ingests: dict[str, tuple[subprocess.Popen[bytes], str]]
    bare: subprocess.Popen[bytes]
    bare_url: str
    flask: subprocess.Popen[bytes]
    flask_url: str
    flask_out: Path


def measure_size(
    servers: Servers, name: str, work: Path, args: argparse.Namespace
) -> tuple[dict[str, Peak], dict[str, dict[str, int]], Peak, Peak, int]:
    """Peak runs at one size: every ingest variant, then bare, then Flask, one after another.

    Fresh deliveries for every measured run (the warm-up's are spent). Flask gets the same
    bodies with the task id where the page reads it (top-level ``taskId``), so every
    request writes a file of its own; the files are counted, then removed.
    """
    size = SIZES[name]
    # 1 MB bodies: fewer connections, so 64 x 1 MB is not all in flight at once.
    connections = args.connections if size < SIZES["1MB"] else 16
    count = 200_000 if size <= 10 * 1024 else 40_000
    folder = work / name
    runs: dict[str, list[Peak]] = {variant: [] for variant in servers.ingests}
    paced: dict[str, list[float]] = {variant: [] for variant in servers.ingests if args.paced}
    outcomes: dict[str, dict[str, int]] = {}
    for _, base in servers.ingests.values():
        write_requests(folder, size, count, "warm")
        warm_up(f"{base}/callbacks/suno/midi", folder, args, connections)
    # Rounds interleave the variants (a b c a b c), so a burst of load from outside falls on
    # all of them alike; the median round of each is kept.
    for _ in range(args.rounds):
        for variant, (proc, base) in servers.ingests.items():
            write_requests(folder, size, count, "bench")
            before = scrape_outcomes(base)
            runs[variant].append(
                measure_peak(f"{base}/callbacks/suno/midi", proc.pid, folder, args, connections)
            )
            if args.paced:
                write_requests(folder, size, count, "paced")
                paced[variant].append(
                    paced_cpu(f"{base}/callbacks/suno/midi", proc.pid, folder, args)
                )
            delta = outcome_delta(before, scrape_outcomes(base))
            outcomes[variant] = dict(Counter(outcomes.get(variant, {})) + Counter(delta))
    peaks = {v: sorted(r, key=lambda p: p.wrk.rps)[len(r) // 2] for v, r in runs.items()}
    if args.rounds > 1:
        for variant, peaks_of in runs.items():
            print(
                f"{name} {variant} by round: "
                + ", ".join(
                    f"{p.wrk.rps:.0f} req/s {p.cpu_per_request * 1e6:.0f} µs" for p in peaks_of
                ),
                flush=True,
            )
    for variant, cpus in paced.items():
        peaks[variant].paced_cpu = sorted(cpus)[len(cpus) // 2]
    bare = measure_peak(servers.bare_url, servers.bare.pid, folder, args, connections)
    flask_folder = work / f"{name}-flask"
    write_requests(flask_folder, size, count, "flask", task_key="taskId")
    warm_up(servers.flask_url, flask_folder, args, connections)
    clear(servers.flask_out)
    write_requests(flask_folder, size, count, "flask", task_key="taskId")
    flask = measure_peak(servers.flask_url, servers.flask.pid, flask_folder, args, connections)
    files = len(list(servers.flask_out.iterdir()))
    clear(servers.flask_out)
    return peaks, outcomes, bare, flask, files


def clear(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def latency_runs(
    vegeta: str,
    base: str,
    bootstrap: str,
    topic: str,
    name: str,
    rps: float,
    work: Path,
    args: argparse.Namespace,
) -> tuple[list[RateResult], WrkResult, float]:
    """Latency at half the peak (vegeta open loop, wrk paced), and Kafka alone."""
    size = SIZES[name]
    rate_folder = work / f"{name}-rate"
    # Several runs: one 8 s run's p99 moves with whatever else the two cores do (the
    # broker's bursts above all), so every run is shown, and the median.
    halves = []
    for run in range(args.rate_runs):
        write_requests(rate_folder, size, int(rps * args.rate_duration) + 10, f"rate{run}")
        halves.append(
            open_loop(
                vegeta,
                f"{base}/callbacks/suno/midi",
                rate_folder,
                rate=max(1.0, rps / 2),
                duration=args.rate_duration,
            )
        )
    # The same target rate from wrk itself (C, lighter than the Python client): 16
    # connections each pausing so that together they send ~half the peak.
    write_requests(rate_folder, size, int(rps * args.rate_duration) + 10, "paced")
    pause = max(1, int(1000 * 16 / max(1.0, rps / 2)))
    paced = run_wrk(
        f"{base}/callbacks/suno/midi",
        rate_folder,
        duration=args.rate_duration,
        connections=16,
        threads=1,
        pause_ms=pause,
    )
    print(
        f"{name}: wrk paced ({pause} ms pause x 16 connections): {paced.rps:.0f} req/s "
        f"achieved, p50 {paced.p50_ms:.1f} ms p99 {paced.p99_ms:.1f} ms",
        flush=True,
    )
    ceiling = asyncio.run(publish_ceiling(bootstrap, topic, size))
    print(
        f"{name}: Kafka alone (aiokafka, acks=all, 64 senders): {ceiling:.0f} publishes/s",
        flush=True,
    )
    return halves, paced, ceiling


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1KB,10KB,100KB,1MB")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rate-duration", type=float, default=8.0)
    parser.add_argument(
        "--rate-runs", type=int, default=3, help="open-loop runs at half the peak (median shown)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="peak runs only (no half-peak latency runs, no Kafka-alone ceiling)",
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated ingest variants measured in the same run, from {list(VARIANTS)}; "
        "ratios and targets are the first one's",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="peak runs per ingest variant, interleaved (the median is shown)",
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=0,
        help="also measure each ingest variant's CPU per request at this offered rate "
        "(req/s; robust to neighbours' load)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the first variant's peak run at the first size into this file "
        "(a raw collapsed-stack file)",
    )
    parser.add_argument(
        "--dedupe",
        choices=("redis", "memory"),
        default="redis",
        help="memory: attribute cost (the full path uses Redis)",
    )
    parser.add_argument("--log-level", default="INFO", help="the ingest's LOG_LEVEL")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let every process run on every CPU (default: the servers under test, the "
        "ingest, bare and Flask, get CPU 0; Kafka, Redis and the load generators share the "
        "others)",
    )
    args = parser.parse_args(argv)
    args.variant_names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_names if v not in VARIANTS]
    if unknown or not args.variant_names:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    if "hiredis" in args.variant_names and importlib.util.find_spec("hiredis") is None:
        parser.error(
            "the hiredis variant needs hiredis: .venv/bin/python -m uv pip install hiredis"
        )
    return args


def find_vegeta() -> str:
    try:
        return subprocess.run(
            [str(ROOT / "scripts" / "ensure-go-tool.sh"), "vegeta"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"vegeta is needed for the open-loop latency run:\n{exc.stderr}")


@contextlib.contextmanager
def start_servers(
    env: dict[str, str], work: Path, args: argparse.Namespace, cpus: set[int] | None
) -> Iterator[Servers]:
    """Every server under test, started at once and idle until its turn, all on ``cpus``."""
    with contextlib.ExitStack() as stack:
        ingests = {}
        for variant in args.variant_names:
            port = free_port()
            command = [sys.executable, "-m", "bench.ingest.variant"]
            variant_env = {**env, **VARIANTS[variant], "INGEST_PORT": str(port)}
            proc = stack.enter_context(
                process(command, variant_env, work / f"ingest-{variant}.log", cpus)
            )
            ingests[variant] = (proc, f"http://127.0.0.1:{port}")
        bare_port, flask_port = free_port(), free_port()
        bare = stack.enter_context(
            process(
                [sys.executable, str(HERE / "bare.py"), str(bare_port)],
                env,
                work / "bare.log",
                cpus,
            )
        )
        flask_out = work / "flask-out"
        # The page's receiver prints several lines per callback (and Werkzeug logs each
        # request): to a file, so their cost stays in (block-buffered, as when a process
        # manager collects it) without a terminal's pace in the way.
        flask = stack.enter_context(
            process(
                [sys.executable, str(HERE / "flask_receiver.py"), str(flask_port), str(flask_out)],
                env,
                work / "flask.log",
                cpus,
            )
        )
        for _, base in ingests.values():
            wait_http(f"{base}/readyz")
        wait_port(bare_port)
        wait_port(flask_port)
        yield Servers(
            ingests=ingests,
            bare=bare,
            bare_url=f"http://127.0.0.1:{bare_port}/callbacks/suno/midi",
            flask=flask,
            flask_url=f"http://127.0.0.1:{flask_port}/suno-midi-callback",
            flask_out=flask_out,
        )


@dataclass
class Row:
    name: str
    peaks: dict[str, Peak]
    outcomes: dict[str, dict[str, int]]
    bare: Peak
    flask: Peak
    flask_files: int
    halves: list[RateResult]
    paced: WrkResult | None
    ceiling: float | None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (or make bench-ingest)")
    vegeta = "" if args.quick else find_vegeta()
    sizes = [s.strip() for s in args.sizes.split(",")]

    # The servers under test get a CPU of their own; the broker, Redis, wrk and vegeta (all
    # started from here, so they inherit this process's affinity) share the rest, as they
    # would run on other hosts in production. All servers get the same CPU: the ratios
    # compare like with like.
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus: set[int] | None = None
    if not args.no_pin and len(cpus) >= 2:
        server_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))

    work = Path(tempfile.mkdtemp(prefix="suno-bench-ingest-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    broker = None if external else LocalKafka(heap="1g").start()
    bootstrap = external or broker.bootstrap_servers  # type: ignore[union-attr]
    redis = LocalRedis().start()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_CALLBACKS": f"bench.{uuid.uuid4().hex[:8]}.callbacks",
        "INGEST_HOST": "127.0.0.1",
        "SUNO_WEBHOOK_SECRETS": KEY,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": args.log_level,
    }
    if args.dedupe == "redis":
        env["REDIS_URL"] = redis.url
    rows: list[Row] = []
    try:
        with start_servers(env, work, args, server_cpus) as servers:
            for name in sizes:
                peaks, outcomes, bare, flask, files = measure_size(servers, name, work, args)
                if args.profile is not None and name == sizes[0]:
                    profile_run(servers, name, work, args)
                first = peaks[args.variant_names[0]]
                halves: list[RateResult] = []
                paced = ceiling = None
                if not args.quick:
                    halves, paced, ceiling = latency_runs(
                        vegeta,
                        servers.ingests[args.variant_names[0]][1],
                        bootstrap,
                        env["KAFKA_TOPIC_CALLBACKS"],
                        name,
                        first.wrk.rps,
                        work,
                        args,
                    )
                row = Row(name, peaks, outcomes, bare, flask, files, halves, paced, ceiling)
                rows.append(row)
                print_size(row, args.variant_names)
    finally:
        redis.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_summary(rows, args, server_cpus, cpus, external)


def profile_run(servers: Servers, name: str, work: Path, args: argparse.Namespace) -> None:
    """An extra peak run of the first variant under py-spy (not one of the measured runs:
    the sampler takes some CPU of its own)."""
    proc, base = servers.ingests[args.variant_names[0]]
    folder = work / name
    write_requests(folder, SIZES[name], 200_000, "profile")
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [str(py_spy), "record", "--pid", str(proc.pid), "--format", "raw"]
    command += ["--rate", "250", "--nonblocking", "--output", str(args.profile)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as profiler:
        time.sleep(1)  # py-spy attached
        run_wrk(
            f"{base}/callbacks/suno/midi",
            folder,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
        )
        profiler.send_signal(signal.SIGINT)
    print(f"profile of {args.variant_names[0]} at {name} written to {args.profile}", flush=True)


def print_size(row: Row, variants: list[str]) -> None:
    first = row.peaks[variants[0]]
    parts = [
        f"{v} {p.wrk.rps:.0f} req/s ({p.cpu_per_request * 1e6:.0f} µs CPU, p99 "
        f"{p.wrk.p99_ms:.1f} ms, outcomes {row.outcomes[v]})"
        for v, p in row.peaks.items()
    ]
    print(
        f"{row.name}: ingest {' | '.join(parts)} | bare {row.bare.wrk.rps:.0f} req/s "
        f"({row.bare.cpu_per_request * 1e6:.0f} µs) | flask {row.flask.wrk.rps:.0f} req/s "
        f"({row.flask.cpu_per_request * 1e6:.0f} µs, {row.flask_files} files for "
        f"{row.flask.wrk.requests} requests, non-2xx {row.flask.wrk.non_2xx}) | "
        f"ingest/bare {first.wrk.rps / row.bare.wrk.rps:.1%} "
        f"ingest/flask {first.wrk.rps / row.flask.wrk.rps:.1f}x",
        flush=True,
    )
    if row.halves:
        half = sorted(row.halves, key=lambda r: r.p99_ms)[len(row.halves) // 2]
        print(
            f"{row.name}: at {half.rate:.0f} req/s (median of {len(row.halves)}): p50 "
            f"{half.p50_ms:.1f} ms p99 {half.p99_ms:.1f} ms [p99 per run: "
            f"{', '.join(f'{r.p99_ms:.1f}' for r in row.halves)}] "
            f"({sum(r.ok for r in row.halves)}/{sum(r.sent for r in row.halves)} ok"
            f"{''.join(f', other {r.other}' for r in row.halves if r.other)}"
            f"{''.join(f'; {e}' for r in row.halves for e in r.errors)})",
            flush=True,
        )


def print_summary(
    rows: list[Row],
    args: argparse.Namespace,
    server_cpus: set[int] | None,
    cpus: list[int],
    external: str,
) -> None:
    variants = args.variant_names
    print()
    pinning = (
        f"servers under test on CPU {sorted(server_cpus)}, the rest on {cpus[1:]}"
        if server_cpus
        else "no CPU pinning"
    )
    print(
        f"machine: {os.cpu_count()} CPUs ({pinning}), {platform_summary()}; wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s; Kafka acks=all "
        f"({'external' if external else 'local single broker'}), Redis {redis_version()}; "
        f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
    )
    print()
    print(
        "| body | ingest req/s | bare req/s | flask req/s | ingest/bare | ingest/flask "
        "| CPU per request ingest / bare / flask | ingest p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        first = row.peaks[variants[0]]
        print(
            f"| {row.name} | {first.wrk.rps:.0f} | {row.bare.wrk.rps:.0f} "
            f"| {row.flask.wrk.rps:.0f} | {first.wrk.rps / row.bare.wrk.rps:.1%} "
            f"| {first.wrk.rps / row.flask.wrk.rps:.1f}x "
            f"| {first.cpu_per_request * 1e6:.0f} / {row.bare.cpu_per_request * 1e6:.0f} / "
            f"{row.flask.cpu_per_request * 1e6:.0f} µs "
            f"| {first.wrk.p50_ms:.1f} / {first.wrk.p99_ms:.1f} ms |"
        )
    if len(variants) > 1:
        print()
        print(
            f"| body | variant | req/s | vs {variants[0]} | CPU per request at peak "
            f"| CPU per request at {args.paced:.0f}/s (--paced) | vs {variants[0]} | p99 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            base = row.peaks[variants[0]]
            for variant, peak in row.peaks.items():
                cpu = "" if peak.paced_cpu is None else f"{peak.paced_cpu * 1e6:.0f} µs"
                vs = (
                    ""
                    if peak.paced_cpu is None or base.paced_cpu is None
                    else f"{peak.paced_cpu / base.paced_cpu:.2f}x"
                )
                print(
                    f"| {row.name} | {variant} | {peak.wrk.rps:.0f} "
                    f"| {peak.wrk.rps / base.wrk.rps:.2f}x | {peak.cpu_per_request * 1e6:.0f} µs "
                    f"| {cpu} | {vs} | {peak.wrk.p99_ms:.1f} ms |"
                )
    if any(row.halves for row in rows):
        print()
        print(
            "| body | Kafka alone | half-peak rate | p50/p99, median run (vegeta open loop) "
            "| achieved, p50/p99 (wrk paced) |"
        )
        print("|---|---|---|---|---|")
        for row in rows:
            if not row.halves or row.paced is None:
                continue
            half = sorted(row.halves, key=lambda r: r.p99_ms)[len(row.halves) // 2]
            print(
                f"| {row.name} | {row.ceiling:.0f}/s | {half.rate:.0f}/s "
                f"| {half.p50_ms:.1f} / {half.p99_ms:.1f} ms (p99 runs: "
                f"{' / '.join(f'{r.p99_ms:.1f}' for r in row.halves)}) "
                f"| {row.paced.rps:.0f}/s, {row.paced.p50_ms:.1f} / {row.paced.p99_ms:.1f} ms |"
            )
    print()
    for row in rows:
        first = row.peaks[variants[0]]
        vs_flask = first.wrk.rps / row.flask.wrk.rps
        line = (
            f"target at {row.name}: ingest >= 12x Flask: "
            f"{'MET' if vs_flask >= 12 else 'MISSED'} ({vs_flask:.1f}x)"
        )
        if row.name == "10KB":
            vs_bare = first.wrk.rps / row.bare.wrk.rps
            line += (
                f"; ingest >= 0.25x bare: {'MET' if vs_bare >= 0.25 else 'MISSED'} ({vs_bare:.2f}x)"
            )
            if row.halves and row.paced is not None:
                line += "; " + latency_target(row.halves, row.paced)
        print(line)


def latency_target(halves: list[RateResult], paced: WrkResult) -> str:
    """The earlier issue's latency target at 10 KB: p99 <= 25 ms at half the peak rate."""
    half = sorted(halves, key=lambda r: r.p99_ms)[len(halves) // 2]
    met = sum(r.p99_ms <= 25 for r in halves)
    return (
        f"p99 <= 25 ms at half the peak: {'MET' if half.p99_ms <= 25 else 'MISSED'} by "
        f"vegeta (open loop, median of {len(halves)} runs: {half.p99_ms:.1f} ms at "
        f"{half.rate:.0f}/s; met in {met} of {len(halves)} runs), "
        f"{'MET' if paced.p99_ms <= 25 else 'MISSED'} by wrk paced ({paced.p99_ms:.1f} ms at "
        f"{paced.rps:.0f}/s achieved)"
    )


def platform_summary() -> str:
    import platform

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model or platform.processor()}, Python {platform.python_version()}"


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "?"


if __name__ == "__main__":
    main()
