"""The schedule of faults of one chaos run, drawn from its seed: the same seed, the same
faults at the same moments, so a failed run can be run again as it was."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["SERVERS", "SERVICES", "TARGETS", "Fault", "schedule"]

#: The servers the system stands on; killed with SIGKILL, restarted on their own data.
SERVERS: Final = ("broker", "redis", "postgres")
#: Our processes: two ingest replicas behind one port, and one of each consumer.
SERVICES: Final = ("ingest-a", "ingest-b", "processor", "archiver", "tracker")
TARGETS: Final = SERVERS + SERVICES

Action = Literal["kill", "freeze"]


@dataclass(frozen=True, slots=True)
class Fault:
    """At ``at`` seconds into the load: SIGKILL ``targets`` and restart them ``seconds``
    later, or SIGSTOP them and SIGCONT ``seconds`` later."""

    at: float
    action: Action
    targets: tuple[str, ...]
    seconds: float

    def what(self) -> str:
        return f"{self.action} {' + '.join(self.targets)} for {self.seconds:.1f} s"

    def describe(self) -> str:
        return f"{self.at:6.1f} s  {self.what()}"


def schedule(
    seed: int,
    duration: float,
    *,
    gap: tuple[float, float] = (3.0, 6.0),
    down: tuple[float, float] = (1.0, 4.0),
    freeze_seconds: float = 20.0,
    together: float = 0.25,
    settle: float = 10.0,
) -> tuple[Fault, ...]:
    """Faults over ``duration`` seconds of load, all over ``settle`` seconds before its end.

    Every target is killed in turn, in an order drawn anew for each round; a kill takes a
    second target with it ``together`` of the time. Once per round a target drawn from all
    is frozen for ``freeze_seconds`` (longer than the provider's 15 s callback timeout)
    while the kills go on around it, never of the frozen one. A kill comes ``gap`` seconds
    after the previous one has restarted: the system is hit again while it is still
    recovering, but a target is never killed twice at once.
    """
    rng = random.Random(f"chaos:{seed}")
    faults: list[Fault] = []
    now = round(rng.uniform(*gap), 1)
    end = duration - settle
    frozen, thawed = "", 0.0
    while True:
        order = list(TARGETS)
        rng.shuffle(order)
        freeze_target, freeze_at = rng.choice(TARGETS), rng.randrange(len(order))
        position, froze = 0, False
        while position < len(order):
            if not froze and position == freeze_at and now >= thawed:
                froze = True
                frozen, thawed = freeze_target, now + freeze_seconds
                if thawed > end:
                    return tuple(faults)
                faults.append(Fault(now, "freeze", (frozen,), freeze_seconds))
                now = round(now + rng.uniform(*gap), 1)
                continue
            if not froze and position == freeze_at:
                freeze_at += 1  # the last freeze is still on: this one comes a little later
            target = order[position]
            position += 1
            if target == frozen and now < thawed:
                if position < len(order):
                    order.append(target)  # killed once it is running again
                    continue
                now = round(thawed + rng.uniform(*gap), 1)  # nothing else is left to hit
            targets: tuple[str, ...] = (target,)
            if rng.random() < together:
                others = [t for t in TARGETS if t != target and (t != frozen or now >= thawed)]
                targets += (rng.choice(others),)
            fault = Fault(now, "kill", targets, round(rng.uniform(*down), 1))
            if fault.at + fault.seconds > end:
                return tuple(faults)
            faults.append(fault)
            now = round(fault.at + fault.seconds + rng.uniform(*gap), 1)
