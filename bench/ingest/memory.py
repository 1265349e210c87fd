"""Ingest memory under large bodies: the process's RSS while 64 x 8 MiB callbacks arrive at once.

Three scenarios against a real ingest process and a real local Kafka broker, each sending
``--concurrency`` bodies of ``--size`` bytes at once and reading the ingest's VmRSS from
``/proc/<pid>/status`` every few milliseconds (and VmHWM, reset before each scenario):

* **forged, refused unread**: stale signature headers; every answer must be 401, and the
  growth small (the bodies are never read);
* **forged, well-formed**: a fresh timestamp and a wrong signature, which only the body's
  task id can disprove: bodies are read within the buffer budget, 401 or 503;
* **valid, broker stalled**: correctly signed callbacks while the broker is SIGSTOPped:
  503 (``overloaded`` past the budget, ``unavailable`` after the publish timeout), growth
  within the budget plus headroom, the process alive after.

    .venv/bin/python -m bench.ingest.memory                 # 64 x 8 MiB, ~1 minute
    .venv/bin/python -m bench.ingest.memory --concurrency 16 --size 1MiB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devenv.kafka import LocalKafka
from devenv.processes import free_port
from services.ingest.verify import sign

from .run import KEY, process, wait_http

MiB = 1024 * 1024
#: The budget the ingest runs with here: the base ConfigMap's.
BUDGET = 192 * MiB


@dataclass
class Outcome:
    name: str
    statuses: Counter[str]
    baseline_mib: float
    peak_rss_mib: float
    hwm_mib: float | None
    alive: bool

    @property
    def growth_mib(self) -> float:
        peak = max(self.peak_rss_mib, self.hwm_mib or 0.0)
        return peak - self.baseline_mib


def status_mib(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1)) / 1024


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def sampling(pid: int) -> Iterator[list[float]]:
    """VmRSS every 5 ms in a thread, for as long as the block runs."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(status_mib(pid, "VmRSS"))
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def body(task_id: str, size: int) -> bytes:
    """A callback of exactly ``size`` bytes, nearly all msg."""
    head = f'{{"task_id": "{task_id}", "code": 200, "msg": "'.encode()
    tail = b'", "data": {"state": "complete", "instruments": []}}'
    return head + b"m" * (size - len(head) - len(tail)) + tail


async def send_all(url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Counter[str]:
    """Every request at once, each on its own connection; statuses and error codes counted."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(data: bytes, headers: dict[str, str]) -> str:
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    answer = await response.json()
                    code = answer.get("error", {}).get("code", answer.get("status"))
                    return f"{response.status} {code}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                return f"no answer ({type(exc).__name__})"

        return Counter(await asyncio.gather(*(one(d, h) for d, h in requests)))


def scenario(
    name: str,
    pid: int,
    base: str,
    requests: list[tuple[bytes, dict[str, str]]],
    during: Callable[[], None] = lambda: None,
) -> Outcome:
    time.sleep(1.0)  # let the previous scenario's buffers go back
    baseline = status_mib(pid, "VmRSS")
    can_reset = reset_hwm(pid)
    with sampling(pid) as samples:
        during()
        statuses = asyncio.run(send_all(f"{base}/callbacks/suno/midi", requests))
        time.sleep(0.5)
    hwm = status_mib(pid, "VmHWM") if can_reset else None
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            alive = response.status == 200
    except OSError:
        alive = False
    return Outcome(name, statuses, baseline, max(samples, default=baseline), hwm, alive)


def signed(task_id: str, *, timestamp: int, signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": signature or sign(KEY.encode(), task_id, timestamp),
    }


def report(outcomes: list[Outcome], *, concurrency: int, size: int, budget: int) -> None:
    print(f"\n{concurrency} concurrent bodies of {size / MiB:g} MiB, budget {budget / MiB:g} MiB")
    print(f"{'scenario':<28} {'baseline':>9} {'peak RSS':>9} {'growth':>8}  answers")
    for o in outcomes:
        answers = ", ".join(f"{n} x {s}" for s, n in sorted(o.statuses.items()))
        print(
            f"{o.name:<28} {o.baseline_mib:>7.0f}MB {o.baseline_mib + o.growth_mib:>7.0f}MB "
            f"{o.growth_mib:>6.0f}MB  {answers}{'' if o.alive else '  PROCESS DEAD'}"
        )


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)(MiB|KiB)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"a size like 8MiB or 1024KiB, got {text!r}")
    return int(match.group(1)) * {"MiB": MiB, "KiB": 1024, None: 1}[match.group(2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=8 * MiB)
    parser.add_argument("--budget", type=parse_size, default=BUDGET)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="suno-bench-memory-"))
    broker = LocalKafka().start()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TOPIC_CALLBACKS": f"bench.{uuid.uuid4().hex[:8]}.callbacks",
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(port),
        "INGEST_MAX_BUFFERED_BYTES": str(args.budget),
        "SUNO_WEBHOOK_SECRETS": KEY,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    n, size = args.concurrency, args.size
    try:
        with process([sys.executable, "-m", "services.ingest"], env, work / "ingest.log") as proc:
            wait_http(f"{base}/readyz")
            now = int(time.time())
            ids = [f"mem-{uuid.uuid4().hex[:16]}" for _ in range(n)]
            shared = body("forged-task", size)
            outcomes = [
                scenario(
                    "forged, refused unread",
                    proc.pid,
                    base,
                    [(shared, signed("forged-task", timestamp=now - 3600)) for _ in range(n)],
                ),
                scenario(
                    "forged, well-formed",
                    proc.pid,
                    base,
                    [
                        (shared, signed("x", timestamp=now, signature="A" * 43 + "="))
                        for _ in range(n)
                    ],
                ),
            ]
            assert broker.process is not None
            broker.process.send_signal(signal.SIGSTOP)
            try:
                outcomes.append(
                    scenario(
                        "valid, broker stalled",
                        proc.pid,
                        base,
                        [(body(t, size), signed(t, timestamp=int(time.time()))) for t in ids],
                    )
                )
            finally:
                broker.process.send_signal(signal.SIGCONT)
            report(outcomes, concurrency=n, size=size, budget=args.budget)
            print(f"(ingest log: {work / 'ingest.log'})")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
