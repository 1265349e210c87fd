"""Pipeline benchmark: the highest rate of 10 KB signed callbacks that the ingest, processor
and archiver sustain together, against the ingest alone, same machine, same run.

    .venv/bin/python -m bench.pipeline.run            # ~12 minutes
    .venv/bin/python -m bench.pipeline.run --quick    # ~5 minutes, 15 s steps: development

One broker, one Redis, an ingest with nothing behind it (the baseline), and for each load a
fresh pipeline: an ingest, the processor and the archiver on topics and consumer groups of
their own (``--replicas`` consumer processes each). Every process runs on every CPU (no
pinning: the pipeline's parts compete for the machine as they would on one host). The load
is vegeta's, a distinct pre-signed callback per request (bench/ingest's generator):

1. the ingest-alone peak, vegeta closed loop at full speed (64 requests in flight), before
   and after the search;
2. the search: fixed open-loop rates for ``--step-seconds`` each, bisected between 0 and the
   peak; a rate is sustained when every request got a 200 and both consumer groups' lag
   (committed vs end offsets) is back to 0 within ``--drain-limit`` seconds of the load's end;
3. at half the sustained rate, open loop: per request, its send (vegeta's timestamp) to its
   MIDI file being written (the processor's notes event, published once the file is in
   place; read back from Kafka after the run, so observing costs nothing during it);
4. CPU per callback of each process (``/proc``) in every step, and py-spy profiles of the
   three services at the sustained rate.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.ingest.run import (
    RateResult,
    find_vegeta,
    open_loop,
    platform_summary,
    write_requests,
)
from services.common.settings import KafkaSettings

from .profiles import profile_summary
from .search import RateSearch, limit, percentile, send_to_file_ms, sent_at
from .system import (
    SERVICES,
    Lag,
    Pipeline,
    cpu_by_process,
    notes_written_at,
    running,
)

SIZE = 10 * 1024
#: The issue's targets: sustained >= 0.7x the ingest alone; send to file p99 <= 500 ms.
TARGET_RATIO = 0.7
TARGET_P99_MS = 500.0
#: The idle measurement before each step: each process's CPU with nothing to do.
IDLE_SECONDS = 3.0


@dataclass
class Step:
    """One fixed-rate run of the whole pipeline and what followed it."""

    load: RateResult
    seconds: float
    #: CPU seconds per process during the load.
    cpu: dict[str, float]
    #: Each group's lag the moment the load ended.
    backlog: dict[str, int]
    #: Seconds from the load's end to every group's lag at 0; ``None``: not within the limit.
    drain: float | None
    #: When not: records per second each group did meanwhile (its pace under a backlog).
    pace: dict[str, float]
    #: CPU cores per process with no load, measured just before it: the fixed cost.
    idle: dict[str, float]
    #: Seconds the load took until its last answer (more than ``seconds`` when answers
    #: were late): what the CPU seconds were spent in.
    wall: float

    def ok(self) -> bool:
        return self.load.ok == self.load.sent and not self.load.errors and self.drain is not None

    def marginal_ms(self, name: str) -> float:
        """CPU milliseconds per callback of ``name`` beyond its idle cost."""
        busy = self.cpu[name] - self.idle.get(name, 0.0) * self.wall
        return 1000 * max(0.0, busy) / self.records(name)

    def records(self, name: str) -> int:
        """Callbacks ``name`` handled during the load: the accepted ones, less a consumer
        group's backlog at the end (it started at 0, after the warm-up)."""
        return max(1, self.load.ok - self.backlog.get(name, 0))

    def line(self) -> str:
        cores = " ".join(f"{k} {v / self.wall:.2f}" for k, v in self.cpu.items())
        answers = f"{self.load.ok}/{self.load.sent} 200"
        if self.load.other or self.load.errors:
            answers += f" (other: {self.load.other} {'; '.join(self.load.errors[:3])})"
        backlog = " ".join(f"{k} {v}" for k, v in self.backlog.items())
        if self.drain is not None:
            drained = f"0 after {self.drain:.1f} s"
        else:
            drained = "not 0 within the limit; pace then " + " ".join(
                f"{k} {v:.0f}/s" for k, v in self.pace.items()
            )
        return (
            f"{self.load.rate:7.0f}/s for {self.seconds:.0f} s (last answer after "
            f"{self.wall:.0f} s): {answers}, p99 "
            f"{self.load.p99_ms:.0f} ms; lag at the end {backlog}, {drained} -> "
            f"{'SUSTAINED' if self.ok() else 'not sustained'} | CPU cores: {cores}"
        )


@contextlib.contextmanager
def cpu_window(system: Pipeline, into: dict[str, float], ingest: str = "ingest") -> Iterator[None]:
    """CPU seconds each process (and vegeta, a reaped child) used within the block; of the
    two ingests, the one under load (``ingest``), shown as the ingest."""
    before = cpu_by_process(system)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    after = cpu_by_process(system)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle = "ingest" if ingest == "alone" else "alone"
    used = {name: after[name] - before[name] for name in after if name != idle}
    used["ingest"] = used.pop(ingest)
    into.update(used)
    into["vegeta"] = (reaped.ru_utime + reaped.ru_stime) - (children.ru_utime + children.ru_stime)


def ingest_alone(
    vegeta: str, system: Pipeline, args: argparse.Namespace, tag: str, guess: float
) -> tuple[RateResult, dict[str, float]]:
    """The baseline's peak: vegeta at full speed against the ingest with nothing behind it."""
    folder = system.run_dir / "alone"
    write_requests(folder, SIZE, int(guess * args.peak_seconds), tag)
    cpu: dict[str, float] = {}
    with cpu_window(system, cpu, ingest="alone"):
        result = open_loop(
            vegeta,
            system.url("alone"),
            folder,
            rate=0,
            duration=args.peak_seconds,
            workers=args.workers,
        )
    return result, cpu


def sustain(vegeta: str, system: Pipeline, args: argparse.Namespace, rate: float, tag: str) -> Step:
    """One step of the search on a fresh pipeline: ``rate`` for ``--step-seconds``, then
    the lag until it is 0 or ``--drain-limit`` has passed."""
    folder = system.run_dir / "step"
    write_requests(folder, SIZE, int(rate * (args.step_seconds + 1)) + 10, tag)
    with system.stage(tag, args.replicas), Lag(system) as lag:
        warm_up(vegeta, system, lag, "ingest")
        idle: dict[str, float] = {}
        with cpu_window(system, idle):
            time.sleep(IDLE_SECONDS)
        idle = {name: seconds / IDLE_SECONDS for name, seconds in idle.items()}
        cpu: dict[str, float] = {}
        with cpu_window(system, cpu):
            began = time.monotonic()
            load = open_loop(
                vegeta, system.url("ingest"), folder, rate=rate, duration=args.step_seconds
            )
            wall = time.monotonic() - began
        began = time.monotonic()
        backlog = lag.by_group()
        drain = lag.drain_seconds(args.drain_limit)
        pace = {}
        if drain is None:
            left, spent = lag.by_group(), time.monotonic() - began
            pace = {name: (backlog[name] - left[name]) / spent for name in backlog}
    return Step(load, args.step_seconds, cpu, backlog, drain, pace, idle, wall)


def send_to_file(
    vegeta: str, system: Pipeline, args: argparse.Namespace, rate: float
) -> tuple[RateResult, list[float], list[str]]:
    """At ``rate``, open loop: per request answered 200, send to its MIDI file written."""
    folder = system.run_dir / "latency"
    write_requests(folder, SIZE, int(rate * (args.latency_seconds + 1)) + 10, "lat")
    results = system.run_dir / "latency.bin"
    with system.stage("latency", args.replicas), Lag(system) as lag:
        warm_up(vegeta, system, lag, "ingest")
        since = lag.end_offsets(system.notes)
        load = open_loop(
            vegeta,
            system.url("ingest"),
            folder,
            rate=rate,
            duration=args.latency_seconds,
            results_to=results,
        )
        lag.drain_seconds(args.settle_limit)
        written = notes_written_at(system, since)
    encoded = subprocess.run(
        [vegeta, "encode", "--to", "json", str(results)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latencies, missing = send_to_file_ms(sent_at(encoded.splitlines()), written)
    return load, latencies, missing


def profile(
    vegeta: str, system: Pipeline, args: argparse.Namespace, rate: float
) -> dict[str, Path]:
    """py-spy on each service (its first replica; 50 Hz, not pausing it) while a fresh
    pipeline takes ``rate``."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (scripts/bootstrap.sh --test): no profiles", flush=True)
        return {}
    folder = system.run_dir / "profile"
    write_requests(folder, SIZE, int(rate * (args.profile_seconds + 1)) + 10, "prof")
    outputs = {name: system.run_dir / f"profile-{name}.txt" for name in SERVICES}
    command = ["record", "--rate", "50", "--nonblocking", "--format", "raw"]
    command += ["--duration", str(int(args.profile_seconds))]
    with system.stage("profile", args.replicas), Lag(system) as lag:
        warm_up(vegeta, system, lag, "ingest")
        spies = [
            subprocess.Popen(
                [spy, *command, "--pid", str(system.pids[name][0]), "--output", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, path in outputs.items()
        ]
        open_loop(vegeta, system.url("ingest"), folder, rate=rate, duration=args.profile_seconds)
        for spy_process in spies:
            spy_process.wait(60)
    return {name: path for name, path in outputs.items() if path.exists()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short steps: a development run")
    parser.add_argument("--step-seconds", type=float, help="each search step (60; quick 15)")
    parser.add_argument("--max-steps", type=int, help="search steps at most (4; quick 3)")
    parser.add_argument("--start", type=float, default=TARGET_RATIO, help="first step x peak")
    parser.add_argument("--peak-seconds", type=float, help="ingest-alone run (15; quick 6)")
    parser.add_argument("--workers", type=int, default=64, help="in flight for the peak")
    parser.add_argument("--latency-seconds", type=float, help="latency run (30; quick 10)")
    parser.add_argument("--profile-seconds", type=float, help="py-spy run (20; quick 8; 0: none)")
    parser.add_argument("--drain-limit", type=float, default=5.0, help="lag back to 0 within")
    parser.add_argument(
        "--settle-limit", type=float, default=120.0, help="latency run: waited for its files"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="processes of the processor and of the archiver"
    )
    parser.add_argument(
        "--consumer-concurrency",
        type=int,
        help="KAFKA_CONSUMER_CONCURRENCY for the consumers (default: the setting's default)",
    )
    args = parser.parse_args(argv)
    defaults = {
        "step_seconds": (60.0, 15.0),
        "max_steps": (4, 3),
        "peak_seconds": (15.0, 6.0),
        "latency_seconds": (30.0, 10.0),
        "profile_seconds": (20.0, 8.0),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    vegeta = find_vegeta()
    run_dir = Path(tempfile.mkdtemp(prefix="suno-bench-pipeline-"))
    print(f"run directory (logs, profiles): {run_dir}", flush=True)
    report = Report(args)
    with running(run_dir) as system:
        if args.consumer_concurrency is not None:
            system.extra["KAFKA_CONSUMER_CONCURRENCY"] = str(args.consumer_concurrency)
        warm_up(vegeta, system, None, "alone")
        report.peaks.append(ingest_alone(vegeta, system, args, "peak0", guess=4000))
        print(report.peak_line(0), flush=True)
        search = RateSearch(report.peaks[0][0].rate, start=args.start, max_steps=args.max_steps)
        while (rate := search.next_rate()) is not None:
            step = sustain(vegeta, system, args, rate, f"s{len(search.steps)}")
            report.steps.append(step)
            search.record(rate, step.ok(), min(step.pace.values(), default=None))
            print(f"step {len(search.steps)}: {step.line()}", flush=True)
        report.search = search
        guess = 2 * report.peaks[0][0].rate
        report.peaks.append(ingest_alone(vegeta, system, args, "peak1", guess=guess))
        print(report.peak_line(1), flush=True)
        # Nothing sustained: the lowest rate tried, so the latency still has a scale.
        base = search.passed or min(rate for rate, _ in search.steps)
        report.latency = send_to_file(vegeta, system, args, base / 2)
        if args.profile_seconds > 0:
            report.profiles = profile(vegeta, system, args, base)
    report.print()


def warm_up(vegeta: str, system: Pipeline, lag: Lag | None, target: str) -> None:
    """Connections, producer metadata, the consumers' first records: a few seconds at a
    low rate before anything is measured, then until the consumers are done with them."""
    folder = system.run_dir / f"warm-{target}"
    write_requests(folder, SIZE, 320, f"w{target[0]}{system.current[:3]}")
    open_loop(vegeta, system.url(target), folder, rate=100, duration=3)
    if lag is not None:
        lag.drain_seconds(120)


class Report:
    """What the run measured, printed at its end in the README's terms."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.peaks: list[tuple[RateResult, dict[str, float]]] = []
        self.steps: list[Step] = []
        self.search: RateSearch | None = None
        self.latency: tuple[RateResult, list[float], list[str]] | None = None
        self.profiles: dict[str, Path] = {}

    def peak_line(self, index: int) -> str:
        result, cpu = self.peaks[index]
        per = ", ".join(
            f"{name} {1000 * seconds / max(1, result.ok):.3f}" for name, seconds in cpu.items()
        )
        return (
            f"ingest alone ({'before' if index == 0 else 'after'} the search): "
            f"{result.rate:.0f} req/s ({result.ok}/{result.sent} 200, p99 {result.p99_ms:.0f} ms)"
            f" | CPU ms per callback: {per}"
        )

    def print(self) -> None:
        print()
        print(
            f"machine: {os.cpu_count()} CPUs, no pinning, {platform_summary()}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; 10 KB signed callbacks, "
            f"distinct per request; PROCESSOR_PREVIEWS=off (a preview puts FluidSynth on "
            f"each record's path); steps of {self.args.step_seconds:.0f} s; "
            f"{self.args.replicas} processor and archiver process(es), consumer concurrency "
            f"{self.args.consumer_concurrency or KafkaSettings().consumer_concurrency}"
        )
        self._print_rates()
        self._print_latency()
        self._print_floor()
        for name, path in self.profiles.items():
            text = path.read_text(errors="replace").splitlines()
            print(profile_summary(name, text, self.args.profile_seconds))

    def _print_rates(self) -> None:
        peaks = [result.rate for result, _ in self.peaks]
        peak = sum(peaks) / len(peaks)
        sustained = self.search.passed if self.search else 0.0
        ratio = sustained / peak if peak else 0.0
        print(
            f"ingest alone (vegeta, {self.args.workers} in flight, unpinned): "
            f"{' and '.join(f'{p:.0f}' for p in peaks)} req/s before and after the search, "
            f"mean {peak:.0f} (bench/ingest pins the ingest on a CPU of its own and drives it "
            "with wrk: its figure is the ingest's ceiling, this one its share of this machine)"
        )
        print(
            f"whole pipeline sustained: {sustained:.0f} req/s for "
            f"{self.args.step_seconds:.0f} s (lag 0 within {self.args.drain_limit:.0f} s, "
            f"every answer 200) = {ratio:.2f}x the ingest alone; target >= {TARGET_RATIO}x: "
            f"{'MET' if ratio >= TARGET_RATIO else 'MISSED'}"
        )

    def _print_latency(self) -> None:
        if self.latency is None:
            return
        load, latencies, missing = self.latency
        p99 = percentile(latencies, 0.99)
        if self.search is not None and not self.search.passed:
            print("nothing was sustained: the latency below is at half the lowest rate tried")
        print(
            f"send to MIDI file written at {load.rate:.0f} req/s (open loop, "
            f"{self.args.latency_seconds:.0f} s, {len(latencies)} files of {load.ok} answered "
            f"200{f', {len(missing)} without a file' if missing else ''}): p50 "
            f"{percentile(latencies, 0.5):.0f} ms, p99 {p99:.0f} ms, max "
            f"{max(latencies, default=float('nan')):.0f} ms (HTTP answer p99 {load.p99_ms:.0f} ms)"
            f"; target p99 <= {TARGET_P99_MS:.0f} ms: {'MET' if p99 <= TARGET_P99_MS else 'MISSED'}"
        )

    def _print_floor(self) -> None:
        """CPU per callback per process at the highest sustained step and at the lowest
        failed one: which process is saturated, and what the CPU alone allows; the pace
        the consumers kept under a backlog, what they allow whatever the CPU."""
        paces = [step.pace for step in self.steps if step.pace]
        if paces:
            print(
                "consumers' pace under a backlog (records/s, per failed step): "
                + "; ".join(" ".join(f"{k} {v:.0f}" for k, v in pace.items()) for pace in paces)
            )
        for label, step in _bracketing(self.steps):
            if not step.ok():
                cores_used = {name: cpu / step.wall for name, cpu in step.cpu.items()}
                verdict = limit(cores_used, os.cpu_count() or 1, step.backlog)
                print(f"what held {step.load.rate:.0f}/s back: {verdict}")
            per = {name: step.marginal_ms(name) for name in step.cpu}
            total = sum(per.values())
            cores = (os.cpu_count() or 1) - sum(step.idle.values())
            rows = ", ".join(
                f"{name} {ms:.2f} ms ({step.cpu[name] / step.wall:.2f} cores, idle "
                f"{step.idle.get(name, 0):.2f})"
                for name, ms in per.items()
            )
            ceilings = ", ".join(f"{name} {1000 / max(per[name], 1e-3):.0f}/s" for name in SERVICES)
            print(
                f"CPU per callback beyond idle at {step.load.rate:.0f}/s ({label}): {rows}; "
                f"sum {total:.2f} ms -> the {cores:.2f} cores left after idle costs allow "
                f"{1000 * cores / max(total, 1e-3):.0f}/s; one core each (a Python process "
                f"runs on one) allows {ceilings}"
            )


def _bracketing(steps: list[Step]) -> list[tuple[str, Step]]:
    """The highest step that passed and the lowest that failed."""
    passed = [s for s in steps if s.ok()]
    failed = [s for s in steps if not s.ok()]
    chosen = []
    if passed:
        chosen.append(("highest sustained", max(passed, key=lambda s: s.load.rate)))
    if failed:
        chosen.append(("lowest not sustained", min(failed, key=lambda s: s.load.rate)))
    return chosen


if __name__ == "__main__":
    main()
