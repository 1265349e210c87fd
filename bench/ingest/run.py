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
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
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


def body_parts(size: int) -> tuple[bytes, bytes]:
    """A realistic callback (notes of one instrument) of ``size`` bytes around the task id."""
    note = {"pitch": 60, "start": 7.6875, "end": "7.911458333333333", "velocity": 0.8}
    payload = {
        "task_id": PLACEHOLDER,
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


def write_requests(folder: Path, size: int, count: int, tag: str) -> None:
    """prefix/suffix/signed files for post.lua: ``count`` distinct signed task ids."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix, suffix = body_parts(size)
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


def main(argv: list[str] | None = None) -> None:
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
        "--dedupe",
        choices=("redis", "memory"),
        default="redis",
        help="memory: attribute cost (the full path uses Redis)",
    )
    parser.add_argument("--log-level", default="INFO", help="the ingest's LOG_LEVEL")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let every process run on every CPU (default: the server under test, ingest or "
        "bare, gets CPU 0; Kafka, Redis and the load generators share the others)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (or make bench-ingest)")
    try:
        vegeta = subprocess.run(
            [str(ROOT / "scripts" / "ensure-go-tool.sh"), "vegeta"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"vegeta is needed for the open-loop latency run:\n{exc.stderr}")
    sizes = [s.strip() for s in args.sizes.split(",")]

    # The server under test gets a CPU of its own; the broker, Redis, wrk and vegeta (all
    # started from here, so they inherit this process's affinity) share the rest, as they
    # would run on other hosts in production. Both servers get the same CPU: the ratio
    # compares like with like.
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
    ingest_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_CALLBACKS": f"bench.{uuid.uuid4().hex[:8]}.callbacks",
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(ingest_port),
        "SUNO_WEBHOOK_SECRETS": KEY,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": args.log_level,
    }
    if args.dedupe == "redis":
        env["REDIS_URL"] = redis.url
    rows = []
    paced_rows: dict[str, WrkResult] = {}
    ceilings: dict[str, float] = {}
    half_p99s: dict[str, list[float]] = {}
    cpu_per_request: dict[str, tuple[float, float]] = {}
    try:
        with (
            process(
                [sys.executable, "-m", "services.ingest"], env, work / "ingest.log", server_cpus
            ) as ingest_proc,
            process(
                [sys.executable, str(HERE / "bare.py"), str(bare_port)],
                env,
                work / "bare.log",
                server_cpus,
            ) as bare_proc,
        ):
            full_base = f"http://127.0.0.1:{ingest_port}"
            bare_url = f"http://127.0.0.1:{bare_port}/callbacks/suno/midi"
            wait_http(f"{full_base}/readyz")
            wait_port(bare_port)
            for name in sizes:
                size = SIZES[name]
                # 1 MB bodies: fewer connections, so 64 x 1 MB is not all in flight at once.
                connections = args.connections if size < SIZES["1MB"] else 16
                count = 200_000 if size <= 10 * 1024 else 40_000
                folder = work / name
                write_requests(folder, size, count, "bench")
                # Warm-up (connections, JIT-free but caches, producer metadata): 2 s.
                run_wrk(
                    f"{full_base}/callbacks/suno/midi",
                    folder,
                    duration=3,
                    connections=connections,
                    threads=args.threads,
                )
                write_requests(folder, size, count, "bench")
                before = scrape_outcomes(full_base)
                cpu_before = cpu_seconds(ingest_proc.pid)
                full = run_wrk(
                    f"{full_base}/callbacks/suno/midi",
                    folder,
                    duration=args.duration,
                    connections=connections,
                    threads=args.threads,
                )
                full_cpu = (cpu_seconds(ingest_proc.pid) - cpu_before) / full.requests
                after = scrape_outcomes(full_base)
                outcomes = {
                    k: int(after.get(k, 0) - before.get(k, 0))
                    for k in after
                    if after.get(k, 0) - before.get(k, 0)
                }
                cpu_before = cpu_seconds(bare_proc.pid)
                bare = run_wrk(
                    bare_url,
                    folder,
                    duration=args.duration,
                    connections=connections,
                    threads=args.threads,
                )
                bare_cpu = (cpu_seconds(bare_proc.pid) - cpu_before) / bare.requests
                cpu_per_request[name] = (full_cpu, bare_cpu)
                rate_folder = work / f"{name}-rate"
                # Several runs: one 8 s run's p99 moves with whatever else the two cores do
                # (the broker's bursts above all), so every run is shown, and the median.
                halves = []
                for run in range(args.rate_runs):
                    write_requests(
                        rate_folder, size, int(full.rps * args.rate_duration) + 10, f"rate{run}"
                    )
                    halves.append(
                        open_loop(
                            vegeta,
                            f"{full_base}/callbacks/suno/midi",
                            rate_folder,
                            rate=max(1.0, full.rps / 2),
                            duration=args.rate_duration,
                        )
                    )
                half = sorted(halves, key=lambda r: r.p99_ms)[len(halves) // 2]
                half_p99s[name] = [r.p99_ms for r in halves]
                # The same target rate from wrk itself (C, lighter than the Python client):
                # 16 connections each pausing so that together they send ~half the peak.
                write_requests(rate_folder, size, int(full.rps * args.rate_duration) + 10, "paced")
                pause = max(1, int(1000 * 16 / max(1.0, full.rps / 2)))
                paced = run_wrk(
                    f"{full_base}/callbacks/suno/midi",
                    rate_folder,
                    duration=args.rate_duration,
                    connections=16,
                    threads=1,
                    pause_ms=pause,
                )
                ceiling = asyncio.run(
                    publish_ceiling(bootstrap, env["KAFKA_TOPIC_CALLBACKS"], size)
                )
                ceilings[name] = ceiling
                print(
                    f"{name}: Kafka alone (aiokafka, acks=all, 64 senders): "
                    f"{ceiling:.0f} publishes/s",
                    flush=True,
                )
                rows.append((name, full, bare, half, outcomes))
                print(
                    f"{name}: wrk paced ({pause} ms pause x 16 connections): "
                    f"{paced.rps:.0f} req/s achieved, p50 {paced.p50_ms:.1f} ms "
                    f"p99 {paced.p99_ms:.1f} ms",
                    flush=True,
                )
                paced_rows[name] = paced
                print(
                    f"{name}: full {full.rps:.0f} req/s p50 {full.p50_ms:.1f} ms "
                    f"p99 {full.p99_ms:.1f} ms | bare {bare.rps:.0f} req/s "
                    f"p50 {bare.p50_ms:.1f} ms p99 {bare.p99_ms:.1f} ms | "
                    f"ratio {full.rps / bare.rps:.0%} | at {half.rate:.0f} req/s (median of "
                    f"{len(halves)}): p50 {half.p50_ms:.1f} ms p99 {half.p99_ms:.1f} ms "
                    f"[p99 per run: {', '.join(f'{p:.1f}' for p in half_p99s[name])}] "
                    f"({sum(r.ok for r in halves)}/{sum(r.sent for r in halves)} ok in all "
                    f"runs{', other: ' if any(r.other for r in halves) else ''}"
                    f"{' '.join(str(r.other) for r in halves if r.other)} "
                    f"{'; '.join(e for r in halves for e in r.errors)}) | outcomes {outcomes}",
                    flush=True,
                )
    finally:
        redis.stop()
        if broker is not None:
            broker.stop()
    print()
    pinning = (
        f"server under test on CPU {sorted(server_cpus)}, the rest on {cpus[1:]}"
        if server_cpus
        else "no CPU pinning"
    )
    print(
        f"machine: {os.cpu_count()} CPUs ({pinning}), {platform_summary()}; wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s; Kafka acks=all "
        f"({'external' if external else 'local single broker'}), Redis {redis_version()}"
    )
    print()
    print(
        "| body | full req/s | full p50 | full p99 | bare req/s | bare p50 | bare p99 "
        "| full/bare | CPU per request full / bare | Kafka alone | half-peak rate "
        "| p50/p99, median run (vegeta open loop) | achieved, p50/p99 (wrk paced) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, full, bare, half, _ in rows:
        ratio = full.rps / bare.rps
        paced = paced_rows[name]
        print(
            f"| {name} | {full.rps:.0f} | {full.p50_ms:.1f} ms | {full.p99_ms:.1f} ms "
            f"| {bare.rps:.0f} | {bare.p50_ms:.1f} ms | {bare.p99_ms:.1f} ms | {ratio:.0%} "
            f"| {cpu_per_request[name][0] * 1e6:.0f} / {cpu_per_request[name][1] * 1e6:.0f} µs "
            f"| {ceilings[name]:.0f}/s | {half.rate:.0f}/s "
            f"| {half.p50_ms:.1f} / {half.p99_ms:.1f} ms "
            f"(p99 runs: {' / '.join(f'{p:.1f}' for p in half_p99s[name])}) "
            f"| {paced.rps:.0f}/s, {paced.p50_ms:.1f} / {paced.p99_ms:.1f} ms |"
        )
    for name, full, bare, half, _ in rows:
        if name == "10KB":
            ratio, paced = full.rps / bare.rps, paced_rows[name]
            print(
                f"\ntargets at 10 KB: throughput >= 50 % of bare: "
                f"{'MET' if ratio >= 0.5 else 'MISSED'} ({ratio:.0%}); p99 <= 25 ms at half "
                f"the peak: {'MET' if half.p99_ms <= 25 else 'MISSED'} by vegeta (open loop, "
                f"median of {len(half_p99s[name])} runs: {half.p99_ms:.1f} ms at "
                f"{half.rate:.0f}/s; met in "
                f"{sum(p <= 25 for p in half_p99s[name])} of {len(half_p99s[name])} runs), "
                f"{'MET' if paced.p99_ms <= 25 else 'MISSED'} by wrk paced "
                f"({paced.p99_ms:.1f} ms at {paced.rps:.0f}/s achieved)"
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
