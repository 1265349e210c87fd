"""The fault schedule: drawn from the seed alone, every target hit in turn, a freeze past
the provider's callback timeout, and never two faults on one target at once."""

from __future__ import annotations

import pytest

from devenv.chaos import CI, TARGETS, schedule

SEEDS = range(200)


def kills_in(faults: tuple[object, ...]) -> set[str]:
    return {t for f in faults if f.action == "kill" for t in f.targets}  # type: ignore[attr-defined]


class TestSchedule:
    def test_the_same_seed_gives_the_same_faults(self) -> None:
        """What makes a failed run reproducible: the seed alone decides."""
        assert schedule(41, CI.load_seconds) == schedule(41, CI.load_seconds)
        assert schedule(41, CI.load_seconds) != schedule(42, CI.load_seconds)

    @pytest.mark.parametrize("seed", SEEDS[:50])
    def test_every_target_is_killed_in_a_ci_run(self, seed: int) -> None:
        """In the CI run's time every target is killed at least once, whatever the seed."""
        assert kills_in(schedule(seed, CI.load_seconds)) == set(TARGETS)

    def test_one_freeze_per_round_longer_than_the_callback_timeout(self) -> None:
        for seed in SEEDS:
            freezes = [f for f in schedule(seed, CI.load_seconds) if f.action == "freeze"]
            assert 1 <= len(freezes) <= 2
            assert all(f.seconds > 15 and len(f.targets) == 1 for f in freezes)

    def test_some_kills_take_two_targets_together(self) -> None:
        together = [
            f for seed in SEEDS for f in schedule(seed, CI.load_seconds) if len(f.targets) == 2
        ]
        assert together and all(len(set(f.targets)) == 2 for f in together)

    def test_faults_end_before_the_load_does(self) -> None:
        """The last ``settle`` seconds of load see every target running."""
        for seed in SEEDS:
            faults = schedule(seed, CI.load_seconds, settle=10.0)
            assert all(f.at + f.seconds <= CI.load_seconds - 10.0 for f in faults)
            assert [f.at for f in faults] == sorted(f.at for f in faults)

    def test_a_target_is_never_hit_while_frozen_or_down(self) -> None:
        for seed in SEEDS:
            busy: dict[str, float] = {}
            for fault in schedule(seed, 600.0):
                for target in fault.targets:
                    assert busy.get(target, -1.0) <= fault.at, (seed, fault)
                    busy[target] = fault.at + fault.seconds

    def test_a_soak_keeps_going_round_after_round(self) -> None:
        faults = schedule(7, 600.0)
        assert len(faults) > 4 * len(TARGETS)
        assert sum(f.action == "freeze" for f in faults) >= 4
