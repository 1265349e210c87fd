"""The pipeline benchmark's arithmetic, kept apart from the processes it drives so it can be
tested: the search over rates, consumer lag from offsets, send-to-file latencies."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "RateSearch",
    "group_lag",
    "limit",
    "percentile",
    "send_to_file_ms",
    "sent_at",
]


@dataclass
class RateSearch:
    """Bisection for the highest rate that passes, between 0 and ``peak``.

    The first step is ``start`` x ``peak`` (the target's fraction: one step says whether
    it is met); each further step halves the interval between the highest rate that passed
    and the lowest that failed (``peak`` counts as failed: the whole pipeline holds the
    ingest, so it cannot sustain more than the ingest alone takes). The search ends after
    ``max_steps`` steps, or once the interval is narrower than ``resolution`` x ``peak``.

    A failed step may report the pace its consumers kept under the backlog (records per
    second): a measured capacity, so the next step goes to 90 % of it when that is below
    the midpoint, instead of halving its way down a minute at a time.
    """

    peak: float
    start: float = 0.7
    max_steps: int = 4
    resolution: float = 0.05
    passed: float = 0.0
    failed: float = field(init=False)
    steps: list[tuple[float, bool]] = field(default_factory=list)
    #: The slowest consumer pace the last failed step reported.
    pace: float | None = None

    def __post_init__(self) -> None:
        if self.peak <= 0:
            raise ValueError(f"the ingest-alone peak must be positive, not {self.peak}")
        self.failed = self.peak

    def next_rate(self) -> float | None:
        """The rate to try next, ``None`` when the search is over."""
        if len(self.steps) >= self.max_steps:
            return None
        if not self.steps:
            return self.start * self.peak
        if self.failed - self.passed < self.resolution * self.peak:
            return None
        middle = (self.passed + self.failed) / 2
        if self.pace is not None and self.passed < 0.9 * self.pace < middle:
            return 0.9 * self.pace
        return middle

    def record(self, rate: float, ok: bool, pace: float | None = None) -> None:
        """A step's outcome; ``pace``: the slowest consumer's records/s after a failure."""
        self.steps.append((rate, ok))
        if ok:
            self.passed = max(self.passed, rate)
        else:
            self.failed = min(self.failed, rate)
            self.pace = pace


def group_lag(committed: Mapping[object, int | None], ends: Mapping[object, int]) -> int:
    """Records not yet done by a consumer group: per partition, its end offset less the
    group's committed offset (nothing committed: all of it, topics here start at 0)."""
    total = 0
    for tp, end in ends.items():
        done = committed.get(tp)
        total += max(0, end - (done if done is not None and done >= 0 else 0))
    return total


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method: a value that was measured."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(round(q * len(ordered), 9))))
    return ordered[rank - 1]


def sent_at(results_jsonl: Iterable[str], param: str = "task") -> dict[str, tuple[float, int]]:
    """Per task id (the ``param`` of each request's URL): when vegeta sent it (Unix
    seconds) and the status it got, from ``vegeta encode --to json`` lines."""
    sent: dict[str, tuple[float, int]] = {}
    for line in results_jsonl:
        if not line.strip():
            continue
        result = json.loads(line)
        tasks = parse_qs(urlsplit(result.get("url") or "").query).get(param)
        if not tasks:
            continue
        sent[tasks[0]] = (_unix(result["timestamp"]), int(result.get("code") or 0))
    return sent


def send_to_file_ms(
    sent: Mapping[str, tuple[float, int]], written: Mapping[str, float]
) -> tuple[list[float], list[str]]:
    """Per request answered 200: the milliseconds from its send to its file being written
    (``written``: Unix seconds per task id); and the tasks answered 200 with no file."""
    latencies, missing = [], []
    for task, (at, code) in sent.items():
        if code != 200:
            continue
        done = written.get(task)
        if done is None:
            missing.append(task)
        else:
            latencies.append((done - at) * 1000)
    return latencies, missing


def _unix(timestamp: str) -> float:
    """RFC 3339 with up to nanoseconds (Go's format) to Unix seconds; ``fromisoformat``
    takes at most microseconds."""
    head, dot, rest = timestamp.partition(".")
    if not dot:
        return datetime.fromisoformat(timestamp).timestamp()
    digits = len(rest) - len(rest.lstrip("0123456789"))
    fraction, zone = rest[:digits], rest[digits:]
    whole = datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    return whole.timestamp() + float(f"0.{fraction}")


#: A process this busy (cores) is taken as saturated: one Python thread holds the GIL.
SATURATED = 0.9


def limit(cores: Mapping[str, float], cpus: int, consumers: Iterable[str]) -> str:
    """What held a failed step back, from the CPU cores each process used during it."""
    full = [name for name, used in cores.items() if used >= SATURATED]
    if full:
        return f"{', '.join(sorted(full))} saturated (a core each)"
    if sum(cores.values()) >= SATURATED * cpus:
        return f"the machine's {cpus} CPUs are full, no one process is"
    waiting = ", ".join(name for name in consumers if name in cores)
    return f"no CPU is full: the consumers ({waiting}) wait between records, not compute"
