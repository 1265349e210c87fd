"""The pipeline benchmark's arithmetic: the rate search, consumer lag, send-to-file latency."""

from __future__ import annotations

import json

import pytest

from bench.pipeline.profiles import Profile
from bench.pipeline.search import (
    RateSearch,
    group_lag,
    limit,
    percentile,
    send_to_file_ms,
    sent_at,
)


def run_search(search: RateSearch, capacity: float) -> list[float]:
    """Drive ``search`` against a system that sustains exactly ``capacity``."""
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    return tried


class TestRateSearch:
    def test_starts_at_the_targets_fraction(self) -> None:
        """The first step says whether the target is met."""
        assert RateSearch(1000, start=0.7).next_rate() == pytest.approx(700)

    def test_bisects_upwards_from_a_pass(self) -> None:
        """After a pass, the next step is halfway to the peak."""
        tried = run_search(RateSearch(1000, max_steps=3), capacity=900)
        assert tried == pytest.approx([700, 850, 925])

    def test_bisects_downwards_from_a_failure(self) -> None:
        """After a failure with nothing passed yet, the next step is half of it."""
        search = RateSearch(1000, max_steps=4)
        tried = run_search(search, capacity=400)
        assert tried == pytest.approx([700, 350, 525, 437.5])
        assert search.passed == pytest.approx(350)

    def test_result_never_exceeds_capacity(self) -> None:
        """Whatever the capacity, the rate reported as sustained was tried and passed."""
        for capacity in (0, 120, 555, 699, 701, 990, 5000):
            search = RateSearch(1000, max_steps=6)
            run_search(search, capacity)
            assert search.passed <= capacity
            assert search.passed == max((r for r, ok in search.steps if ok), default=0.0)

    def test_stops_at_the_resolution(self) -> None:
        """Steps narrower than the resolution are not worth a minute of load."""
        search = RateSearch(1000, max_steps=20, resolution=0.05)
        assert len(run_search(search, capacity=800)) < 20
        assert search.failed - search.passed < 50

    def test_a_measured_pace_steers_the_next_step(self) -> None:
        """A failed step's consumer pace, below the midpoint, is tried next (at 90 %)."""
        search = RateSearch(1000, max_steps=4)
        search.record(700, False, pace=40)
        assert search.next_rate() == pytest.approx(36)
        search.record(36, True)
        assert search.next_rate() == pytest.approx(368)

    def test_a_pace_above_the_midpoint_is_ignored(self) -> None:
        """The midpoint is the faster way down when the pace is no lower."""
        search = RateSearch(1000)
        search.record(700, False, pace=500)
        assert search.next_rate() == pytest.approx(350)

    def test_refuses_a_peak_of_zero(self) -> None:
        """An ingest that answered nothing gives no scale to search on."""
        with pytest.raises(ValueError, match="positive"):
            RateSearch(0)


class TestGroupLag:
    def test_sums_end_minus_committed(self) -> None:
        """Per partition, what is past the committed offset."""
        assert group_lag({"a": 10, "b": 5}, {"a": 12, "b": 5}) == 2

    def test_partition_without_commit_counts_whole(self) -> None:
        """A partition the group never committed on: everything in it is to do."""
        assert group_lag({"a": 3}, {"a": 3, "b": 7}) == 7
        assert group_lag({"a": -1}, {"a": 4}) == 4

    def test_never_negative(self) -> None:
        """A commit read after the end offsets were asked for can be ahead of them."""
        assert group_lag({"a": 9}, {"a": 8}) == 0


class TestLatency:
    def test_nearest_rank_percentile(self) -> None:
        """The p99 of 100 values is the 99th, a value that was measured."""
        values = list(range(1, 101))
        assert percentile(values, 0.99) == 99
        assert percentile(values, 0.5) == 50
        assert percentile([7.0], 0.99) == 7.0

    def test_sent_at_reads_task_and_nanoseconds(self) -> None:
        """vegeta's timestamps carry nanoseconds and an offset; the task is in the URL."""
        lines = [
            json.dumps(
                {
                    "url": "http://127.0.0.1:1/callbacks/suno/midi?task=t-1",
                    "timestamp": "2026-12-01T02:00:00.123456789+01:00",
                    "code": 200,
                }
            ),
            json.dumps({"url": "http://x/callbacks?task=t-2", "timestamp": "2026-12-01T01:00:01Z"}),
            "",
        ]
        sent = sent_at(lines)
        assert sent["t-1"][0] == pytest.approx(1796086800.123456789, abs=1e-6)
        assert sent["t-1"][1] == 200
        assert sent["t-2"] == (pytest.approx(1796086801.0), 0)

    def test_send_to_file_counts_only_answered(self) -> None:
        """A request that was refused makes no file and is not a missing one."""
        sent = {"a": (100.0, 200), "b": (100.0, 503), "c": (101.0, 200)}
        latencies, missing = send_to_file_ms(sent, {"a": 100.25, "b": 100.5})
        assert latencies == pytest.approx([250.0])
        assert missing == ["c"]


class TestProfile:
    def test_leaf_and_own_code(self) -> None:
        """Self samples go to the top frame; inclusive ones to each of our functions once,
        even where it calls itself."""
        lines = [
            "<module> (runpy.py:1);handle (services/processor/app.py:10);"
            "render (services/processor/render.py:5) 3",
            "<module> (runpy.py:1);handle (services/processor/app.py:12);"
            "handle (services/processor/app.py:14);send (aiokafka/conn.py:9) 1",
        ]
        profile = Profile(lines)
        assert profile.total == 4
        assert profile.leaf["render (services/processor/render.py)"] == 3
        assert profile.inclusive["handle (services/processor/app.py)"] == 4
        assert "send (aiokafka/conn.py)" not in profile.inclusive


class TestLimit:
    def test_a_full_core_names_its_process(self) -> None:
        """A Python process at a full core is the limit, whatever the others do."""
        assert limit({"ingest": 0.95, "broker": 0.5}, 2, ["processor"]).startswith("ingest")

    def test_full_machine_without_a_full_process(self) -> None:
        """Every CPU busy, none of it one process's: the machine is the limit."""
        verdict = limit({"ingest": 0.7, "broker": 0.6, "processor": 0.6}, 2, ["processor"])
        assert "CPUs are full" in verdict

    def test_idle_machine_means_waiting_consumers(self) -> None:
        """Lag grew while no CPU was full: the consumers wait, they do not compute."""
        verdict = limit({"processor": 0.2, "archiver": 0.2}, 2, ["processor", "archiver"])
        assert verdict.startswith("no CPU is full")
        assert "processor, archiver" in verdict
