"""One chaos run: start the system, load it while the conductor kills and freezes its
parts, let it settle (an operator settling what the runbook says only an operator can),
then keep the ledger."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

import aiohttp

from services.tracker.registry import Registry

from .ledger import Ledger, read_provider, read_registry, read_topic, request_id_of
from .load import BadInputs, Load, send_bad_inputs, submit
from .plan import Fault, schedule
from .system import TOPICS, Knobs, System, leftover_processes

__all__ = ["CI", "SOAK", "Sizing", "run"]

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Sizing:
    """How much load, for how long, and how long the system may take to settle after."""

    tasks: int
    load_seconds: float
    settle_seconds: float
    rate_limit: tuple[int, float]


#: About three minutes in all: the CI run.
CI: Final = Sizing(tasks=150, load_seconds=100.0, settle_seconds=120.0, rate_limit=(50, 1.0))
#: Ten minutes of load, 10,000 tasks: the soak (bench/chaos).
SOAK: Final = Sizing(tasks=10_000, load_seconds=600.0, settle_seconds=300.0, rate_limit=(200, 1.0))
#: An intent whose outcome is unknown this long after the load is an operator's case.
_UNKNOWN_AFTER: Final = timedelta(seconds=30)


async def run(seed: int, sizing: Sizing, run_dir: Path, say: Say = print) -> Ledger:
    """The whole run in ``run_dir`` (its logs stay there); the ledger says how it went."""
    system = System(run_dir, Knobs(seed=seed, rate_limit=sizing.rate_limit))
    faults = schedule(seed, sizing.load_seconds)
    say(
        f"chaos run: seed {seed}, {sizing.tasks} tasks over {sizing.load_seconds:.0f} s, "
        f"{len(faults)} faults, in {run_dir}"
    )
    supervisor: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(system.start)
        supervisor = asyncio.create_task(system.supervise())
        async with aiohttp.ClientSession() as http:
            bad = await send_bad_inputs(system, http)
            started = time.monotonic()
            conductor = asyncio.create_task(conduct(system, faults, started, say))
            load = await submit(system, http, seed, sizing.tasks, sizing.load_seconds)
            await conductor
            load_seconds = time.monotonic() - started
            say(f"load done in {load_seconds:.0f} s ({load.tries} tries); settling")
            settling = time.monotonic()
            operator = await settle(system, http, load, sizing.settle_seconds, say)
            settled = time.monotonic() - settling
            ledger = await keep_ledger(system, http, seed, load, bad, operator, deadline=60.0)
            ledger.load_seconds, ledger.settle_seconds = load_seconds, settled
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await asyncio.to_thread(system.stop)
    for process in leftover_processes(system.groups):
        ledger.problems.append(f"process left behind: {process}")
    return ledger


async def conduct(system: System, faults: tuple[Fault, ...], started: float, say: Say) -> None:
    """Each fault at its time; a target is never hit again before it is running again."""
    running: dict[str, asyncio.Task[None]] = {}

    async def apply(fault: Fault) -> None:
        if fault.action == "kill":
            await asyncio.gather(*(asyncio.to_thread(system.kill, t) for t in fault.targets))
            await asyncio.sleep(fault.seconds)
            await asyncio.gather(*(asyncio.to_thread(system.revive, t) for t in fault.targets))
        else:
            for target in fault.targets:
                system.freeze(target)
            await asyncio.sleep(fault.seconds)
            for target in fault.targets:
                system.thaw(target)

    for fault in faults:
        await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
        for target in fault.targets:
            if target in running:
                await running[target]
        say(f"  {time.monotonic() - started:6.1f} s  {fault.what()}")
        task = asyncio.create_task(apply(fault))
        for target in fault.targets:
            running[target] = task
    await asyncio.gather(*running.values())


async def settle(
    system: System, http: aiohttp.ClientSession, load: Load, seconds: float, say: Say
) -> int:
    """Until every accepted request is terminal (or ``seconds`` pass). An intent whose
    submission outcome is unknown (the tracker died with ``generate`` in flight) and whose
    callback never came is settled as the runbook says: the operator looks the request up
    at the provider and runs ``suno-tracker resolve``. Returns how many were."""
    deadline = time.monotonic() + seconds
    resolved: set[str] = set()
    accepted = list(load.accepted)
    registry = await Registry.connect(system.database_url)
    try:
        while time.monotonic() < deadline:
            row = await registry.pool.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE state IN ('requested', 'submitted'))"
                " FROM tasks WHERE request_id = ANY($1::text[])",
                accepted,
            )
            known, still_open = (0, 0) if row is None else tuple(row)
            if known == len(accepted) and still_open == 0:
                return len(resolved)
            for task in await registry.unknown_submissions(_UNKNOWN_AFTER):
                rid = task.request_id
                if rid is not None and rid in load.accepted and rid not in resolved:
                    resolved.add(rid)
                    await _resolve(system, http, rid, say)
            await asyncio.sleep(2.0)
    finally:
        await registry.close()
    say(f"not settled after {seconds:.0f} s")
    return len(resolved)


async def _resolve(system: System, http: aiohttp.ClientSession, rid: str, say: Say) -> None:
    """``suno-tracker resolve``, with what the provider's task list says (the simulator's
    control API stands for the provider's dashboard)."""
    async with http.get(system.url("simulator", "/_sim/tasks")) as answer:
        tasks = (await answer.json())["tasks"]
    made = [t["taskId"] for t in tasks if request_id_of(t) == rid]
    how = ["--task-id", made[0]] if made else ["--resubmit"]
    env = {**os.environ, "DATABASE_URL": system.database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.tracker",
        "resolve",
        rid,
        *how,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    say(
        f"  operator: suno-tracker resolve {rid} {' '.join(how)} -> "
        f"{output.decode(errors='replace').strip()[:200]}"
    )


async def keep_ledger(
    system: System,
    http: aiohttp.ClientSession,
    seed: int,
    load: Load,
    bad: BadInputs,
    operator: int,
    *,
    deadline: float,
) -> Ledger:
    """The ledger, read again for up to ``deadline`` seconds while it is not clean (the
    archiver may still be catching up after the last fault)."""
    give_up = time.monotonic() + deadline
    while True:
        ledger = await _ledger(system, http, seed, load, bad, operator)
        if ledger.ok or time.monotonic() > give_up:
            return ledger
        await asyncio.sleep(3.0)


async def _ledger(
    system: System,
    http: aiohttp.ClientSession,
    seed: int,
    load: Load,
    bad: BadInputs,
    operator: int,
) -> Ledger:
    ledger = Ledger(seed=seed, resolved_by_operator=operator)
    ledger.kills, ledger.freezes = system.kills, system.freezes
    ledger.restarts_on_their_own = sum(s.exits for s in system.services)
    provider = await read_provider(http, system.url("simulator"))
    tasks, deliveries, polled = await read_registry(system.database_url)
    ledger.recovered_by_poll = polled
    truths = ledger.check_tasks(load.accepted, provider, tasks)
    for rid, why in load.refused.items():
        ledger.problems.append(f"{rid}: refused by the tracker: {why}")
    ledger.check_files(truths, system.data_dir)
    ledger.check_archive(truths, deliveries, system.data_dir)
    ledger.check_notes(truths, await read_topic(system.bootstrap, TOPICS.notes))
    ledger.check_dead_letters(bad.records, await read_topic(system.bootstrap, TOPICS.dlq))
    ledger.check_bad_http(bad.http)
    return ledger
