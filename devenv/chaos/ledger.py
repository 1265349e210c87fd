"""The ledger of a chaos run: every accepted request held against what the provider knows
to be true, what the registry says, the files, the archive and the topics.

A request is **lost** when it did not end in the state of its provider task (one task,
exactly), or a completed one lacks its ``.mid``, its notes event or an archived body. A
result is **mismatched** when a ``.mid`` differs by a byte from the processor's own
rendering of the provider's body, an archived body from the bytes sent, or two notes
events of one rendering disagree. Anything else out of place is a **problem**.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from services.common.avro import NOTES_SCHEMA, load_codec
from services.common.keys import REQUEST_ID_PARAM, task_key
from services.processor.app import Processed, process_callback
from services.tracker.registry import Registry, Task

from .load import BAD_RECORD_KEY_PREFIX

__all__ = ["EXPECTED_STATE", "Ledger", "ProviderTask", "read_topic"]

#: The registry state each true outcome must end in.
EXPECTED_STATE: Final = {"success": "completed", "empty": "empty", "failure": "failed"}
#: The consumer groups that read the callbacks topic: each dead-letters a bad record once.
CALLBACK_GROUPS: Final = ("suno-midi-processor", "suno-midi-archiver", "suno-midi-tracker")
#: Notes-event fields that may differ between two events of one rendering.
_WHEN_FIELDS: Final = ("received_at", "processed_at")


def request_id_of(described: dict[str, Any]) -> str | None:
    """The request id the tracker put in a provider task's callback URL, if any."""
    query = parse_qs(urlsplit(str(described["callBackUrl"])).query)
    found = query.get(REQUEST_ID_PARAM)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class ProviderTask:
    """One task as the provider (the simulator) knows it."""

    task_id: str
    request_id: str | None
    outcome: str
    accepted: int  # callback attempts the ingest answered 2xx
    body: bytes

    @classmethod
    def of(cls, described: dict[str, Any], body: bytes) -> ProviderTask:
        return cls(
            task_id=described["taskId"],
            request_id=request_id_of(described),
            outcome=described["outcome"],
            accepted=sum(1 for a in described["attempts"] if (a["status"] or 0) // 100 == 2),
            body=body,
        )


@dataclass
class Ledger:
    """What a run shows; ``ok`` when nothing is lost, mismatched or out of place."""

    seed: int
    requests: int = 0
    states: Counter[str] = field(default_factory=Counter)
    truth: Counter[str] = field(default_factory=Counter)
    callbacks_accepted: int = 0
    duplicates_accepted: int = 0
    recovered_by_poll: int = 0
    resolved_by_operator: int = 0
    notes_events: int = 0
    dead_letters: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    freezes: Counter[str] = field(default_factory=Counter)
    restarts_on_their_own: int = 0
    bad_http: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    #: From the end of the load until every accepted request was terminal.
    settle_seconds: float = 0.0
    lost: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.mismatched or self.problems)

    def table(self) -> str:
        states = " / ".join(f"{self.states[s]}" for s in EXPECTED_STATE.values())
        truth = " / ".join(f"{self.truth[s]}" for s in EXPECTED_STATE.values())
        kills = ", ".join(f"{t} {n}" for t, n in sorted(self.kills.items())) or "none"
        freezes = ", ".join(f"{t} {n}" for t, n in sorted(self.freezes.items())) or "none"
        bad = ", ".join(f"{what} -> {status}" for what, status in self.bad_http.items())
        rows = [
            ("seed", str(self.seed)),
            ("tasks requested and accepted", str(self.requests)),
            ("completed / empty / failed", f"{states} (provider's truth: {truth})"),
            ("callback deliveries accepted", f"{self.callbacks_accepted}"),
            ("  of which repeats of a body", f"{self.duplicates_accepted}"),
            ("recovered by poll", str(self.recovered_by_poll)),
            ("unknown submissions settled by the runbook", str(self.resolved_by_operator)),
            ("notes events", str(self.notes_events)),
            ("dead letters (all injected)", str(self.dead_letters)),
            ("bad inputs answered", bad or "none sent"),
            ("kills (SIGKILL) by target", kills),
            ("freezes (SIGSTOP) by target", freezes),
            ("restarts after an exit of its own", str(self.restarts_on_their_own)),
            ("load", f"{self.load_seconds:.0f} s, then {self.settle_seconds:.0f} s to settle"),
            ("throughput", self.throughput()),
            ("lost", str(len(self.lost))),
            ("mismatched", str(len(self.mismatched))),
            ("other problems", str(len(self.problems))),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        for title, items in (
            ("lost", self.lost),
            ("mismatched", self.mismatched),
            ("problems", self.problems),
        ):
            lines += [f"  {title}: {item}" for item in items[:20]]
            if len(items) > 20:
                lines.append(f"  {title}: ... and {len(items) - 20} more")
        return "\n".join(lines)

    def throughput(self) -> str:
        """Requests accepted per second of load, and tasks ended per second of the run."""
        offered = self.requests / max(self.load_seconds, 1e-9)
        ended = self.requests / max(self.load_seconds + self.settle_seconds, 1e-9)
        return f"{offered:.1f} tasks/s accepted, {ended:.1f} tasks/s ended (load + settle)"

    # -- the checks ----------------------------------------------------------------------

    def check_tasks(
        self, accepted: Iterable[str], provider: list[ProviderTask], tasks: list[Task]
    ) -> dict[str, ProviderTask]:
        """Each accepted request made exactly one provider task and ended in its state.
        Returns the provider task of each request."""
        by_request: dict[str, list[ProviderTask]] = defaultdict(list)
        for made_task in provider:
            by_request[made_task.request_id or ""].append(made_task)
        registry = {task.request_id: task for task in tasks if task.request_id}
        truths: dict[str, ProviderTask] = {}
        for rid in accepted:
            self.requests += 1
            made = by_request.pop(rid, [])
            row = registry.get(rid)
            if row is not None:
                self.states[row.state.value] += 1
            if len(made) != 1:
                self.lost.append(f"{rid}: {len(made)} provider tasks (exactly one expected)")
                continue
            truth = made[0]
            truths[rid] = truth
            expected = EXPECTED_STATE[truth.outcome]
            self.truth[expected] += 1
            if row is None:
                self.lost.append(f"{rid}: not in the registry")
            elif row.state.value != expected or row.task_id != truth.task_id:
                self.lost.append(
                    f"{rid}: {row.state.value} with task {row.task_id}, but the provider's "
                    f"task {truth.task_id} ended {truth.outcome} ({expected} expected)"
                )
        for rid, made in by_request.items():
            self.problems.append(f"provider tasks no accepted request made: {rid!r} x{len(made)}")
        for task in tasks:
            if task.request_id is None:
                self.problems.append(f"task {task.task_id} is in the registry as external")
        return truths

    def check_files(self, truths: dict[str, ProviderTask], data_dir: Path) -> None:
        """Each completed task's ``.mid`` equals the processor's rendering of its body."""
        for rid, truth in truths.items():
            if truth.outcome != "success":
                continue
            path = data_dir / "midi" / f"{task_key(truth.task_id)}.mid"
            processed = process_callback(truth.body)
            assert isinstance(processed, Processed) and processed.midi is not None
            try:
                written = path.read_bytes()
            except OSError:
                self.lost.append(f"{rid}: no MIDI file {path.name}")
                continue
            if written != processed.midi:
                self.mismatched.append(f"{rid}: {path.name} differs from a clean rendering")

    def check_archive(
        self, truths: dict[str, ProviderTask], deliveries: dict[str, set[str]], data_dir: Path
    ) -> None:
        """Every body a delivery carried is archived byte for byte: each callback the
        ingest accepted, and each poll answer the registry recorded."""
        for rid, truth in truths.items():
            folder = data_dir / "raw" / task_key(truth.task_id)
            wanted = set(deliveries.get(truth.task_id, ()))
            if truth.accepted:
                self.callbacks_accepted += truth.accepted
                self.duplicates_accepted += truth.accepted - 1
                wanted.add(hashlib.sha256(truth.body).hexdigest())
            for sha in sorted(wanted):
                path = folder / f"{sha}.json"
                try:
                    kept = path.read_bytes()
                except OSError:
                    self.lost.append(f"{rid}: body {sha[:12]} not archived")
                    continue
                if hashlib.sha256(kept).hexdigest() != sha:
                    self.mismatched.append(f"{rid}: archived body {sha[:12]} differs")

    def check_notes(
        self, truths: dict[str, ProviderTask], records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """A notes event for every task with a result; none disagreeing for one rendering."""
        codec = load_codec(NOTES_SCHEMA)
        by_rendering: dict[str, dict[str, Any]] = {}
        tasks_with_events: set[str] = set()
        for record in records:
            event = codec.decode(record.value or b"")
            self.notes_events += 1
            tasks_with_events.add(event["task_id"])
            content = {k: v for k, v in event.items() if k not in _WHEN_FIELDS}
            seen = by_rendering.setdefault(event["rendering_key"], content)
            if seen != content:
                self.mismatched.append(
                    f"{event['task_id']}: two notes events of rendering "
                    f"{event['rendering_key'][:12]} disagree"
                )
        for rid, truth in truths.items():
            if truth.outcome != "failure" and truth.task_id not in tasks_with_events:
                self.lost.append(f"{rid}: no notes event for task {truth.task_id}")

    def check_dead_letters(
        self, injected: list[str], records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Only the records injected on purpose are dead letters, each once per consumer
        group of the callbacks topic."""
        seen: Counter[tuple[str, str]] = Counter()
        for record in records:
            self.dead_letters += 1
            key = (record.key or b"").decode(errors="replace")
            headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
            group = headers.get("dlq.consumer.group", "?")
            if not key.startswith(BAD_RECORD_KEY_PREFIX):
                self.problems.append(
                    f"dead letter {key!r} from {group}: {headers.get('dlq.reason')} "
                    f"{headers.get('dlq.error', '')[:160]}"
                )
                continue
            seen[key, group] += 1
        for key in injected:
            for group in CALLBACK_GROUPS:
                if seen[key, group] != 1:
                    self.problems.append(
                        f"bad record {key} dead-lettered {seen[key, group]} times by {group}"
                    )

    def check_bad_http(self, answers: dict[str, int]) -> None:
        self.bad_http = dict(answers)
        for what, status in answers.items():
            if not 400 <= status < 500:
                self.problems.append(f"bad input ({what}) answered {status}, not a 4xx")


async def read_provider(http: aiohttp.ClientSession, base: str) -> list[ProviderTask]:
    """Every task the simulator made, with the exact body its callbacks carry."""
    async with http.get(f"{base}/_sim/tasks") as answer:
        described = (await answer.json())["tasks"]
    gate = asyncio.Semaphore(16)

    async def body(task_id: str) -> bytes:
        async with gate, http.get(f"{base}/_sim/tasks/{task_id}/callback") as answer:
            return await answer.read() if answer.status == 200 else b""

    bodies = await asyncio.gather(*(body(d["taskId"]) for d in described))
    return [ProviderTask.of(d, b) for d, b in zip(described, bodies, strict=True)]


async def read_registry(url: str) -> tuple[list[Task], dict[str, set[str]], int]:
    """Every task, the body digests of each task's deliveries, and how many tasks have a
    delivery by poll."""
    registry = await Registry.connect(url)
    try:
        tasks = await registry.list_tasks(limit=10_000_000)
        rows = await registry.pool.fetch(
            "SELECT t.task_id, d.body_sha256, d.source FROM task_deliveries d"
            " JOIN tasks t ON t.id = d.task"
        )
    finally:
        await registry.close()
    deliveries: dict[str, set[str]] = defaultdict(set)
    polled: set[str] = set()
    for row in rows:
        deliveries[row["task_id"]].add(row["body_sha256"])
        if row["source"] == "poll":
            polled.add(row["task_id"])
    return tasks, deliveries, len(polled)


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, from the first offset to the end as it is now."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        for _ in range(100):  # without a group, every partition is assigned once known
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        partitions = sorted(consumer.assignment())
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                records += [record for record in batch if record.offset < end[tp]]
        return records
    finally:
        await consumer.stop()
