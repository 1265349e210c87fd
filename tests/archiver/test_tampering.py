"""A tampered or damaged archive: every command names each bad entry in one line and goes on.

Each kind of tampering (an edited sidecar, a body filed under another task, a body that no
longer hashes to its name) and of malformation (bad JSON, missing fields, wrong types, an
unreadable file) is applied to real storage, local and S3 (moto's server), and the real
CLI is run over it: ``list`` and ``export`` without Kafka, ``replay`` through the session
broker, where nothing damaged may reach the callbacks topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.archiver.archive import archive_event, metadata_key, raw_key
from services.archiver.cli import EXIT_DAMAGED, main
from services.common.events import CallbackEvent
from services.common.kafka import Publisher
from services.common.settings import Settings, StorageSettings
from services.common.storage import LocalStorage, Storage, open_storage

from ..helpers import read_topic, service_environment
from .support import at, callback_body, make_event

Mutation = Callable[[Storage, CallbackEvent, CallbackEvent], Awaitable[None]]


async def edit_sidecar(
    storage: Storage, event: CallbackEvent, change: Callable[[dict[str, Any]], object]
) -> None:
    key = metadata_key(event.task_id, event.body_sha256)
    document = json.loads(await storage.get(key))
    change(document)
    await storage.put(key, json.dumps(document).encode())


def sidecar_edit(change: Callable[[dict[str, Any]], object]) -> Mutation:
    async def mutate(storage: Storage, victim: CallbackEvent, _decoy: CallbackEvent) -> None:
        await edit_sidecar(storage, victim, change)

    return mutate


def sidecar_bytes(data: bytes) -> Mutation:
    async def mutate(storage: Storage, victim: CallbackEvent, _decoy: CallbackEvent) -> None:
        await storage.put(metadata_key(victim.task_id, victim.body_sha256), data)

    return mutate


async def retarget(storage: Storage, victim: CallbackEvent, decoy: CallbackEvent) -> None:
    """The audit's case: A's sidecar edited to name task B (and B's delivery key)."""
    await edit_sidecar(storage, victim, lambda d: d.update(task_id=decoy.task_id))


async def other_body(storage: Storage, victim: CallbackEvent, decoy: CallbackEvent) -> None:
    await edit_sidecar(storage, victim, lambda d: d.update(body_sha256=decoy.body_sha256))


async def refile(storage: Storage, victim: CallbackEvent, decoy: CallbackEvent) -> None:
    """A's body and a sidecar naming B, filed in B's folder: only the body tells."""
    document = json.loads(await storage.get(metadata_key(victim.task_id, victim.body_sha256)))
    document["task_id"] = decoy.task_id
    await storage.put(
        metadata_key(decoy.task_id, victim.body_sha256), json.dumps(document).encode()
    )
    await storage.put(raw_key(decoy.task_id, victim.body_sha256), victim.body)


async def rewrite_body(storage: Storage, victim: CallbackEvent, _decoy: CallbackEvent) -> None:
    await storage.put(raw_key(victim.task_id, victim.body_sha256), victim.body.replace(b"6", b"7"))


def loop_link(key: Callable[[CallbackEvent], str]) -> Mutation:
    """The object replaced by a symbolic link to itself: unreadable even for root."""

    async def mutate(storage: Storage, victim: CallbackEvent, _decoy: CallbackEvent) -> None:
        assert isinstance(storage, LocalStorage)
        path = storage.path(key(victim))
        path.unlink()
        os.symlink(path.name, path)

    return mutate


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Mutation
    problem: str
    #: Seen from the sidecar alone (list finds it), or only once the body is read.
    in_sidecar: bool = True
    #: The victim's own entry stops being usable (else the bad entry is a new one).
    damages_victim: bool = True
    local_only: bool = False

    def victim(self) -> CallbackEvent:
        return make_event(f"v-{self.name}", received_at=at(1))

    def decoy(self) -> CallbackEvent:
        return make_event(
            f"d-{self.name}", callback_body(f"d-{self.name}", pitch=40), received_at=at(2)
        )

    def bad_key(self) -> str:
        victim, decoy = self.victim(), self.decoy()
        if self.name == "refiled":
            return raw_key(decoy.task_id, victim.body_sha256)
        if self.in_sidecar and self.name != "unreadable-body":
            return metadata_key(victim.task_id, victim.body_sha256)
        return raw_key(victim.task_id, victim.body_sha256)


CASES = [
    Case("retargeted", retarget, "names task 'd-retargeted' but is filed under task"),
    Case("other-body", other_body, "describes body"),
    Case("refiled", refile, "the body names task 'v-refiled'", False, damages_victim=False),
    Case("rewritten-body", rewrite_body, "does not hash to its name", in_sidecar=False),
    Case("bad-json", sidecar_bytes(b'{"task_id": '), "the sidecar is not valid JSON"),
    Case("not-object", sidecar_bytes(b"[1, 2]"), "the sidecar is not a JSON object"),
    Case("no-task-id", sidecar_edit(lambda d: d.pop("task_id")), "has no 'task_id' field"),
    Case(
        "size-text",
        sidecar_edit(lambda d: d.update(size_bytes="big")),
        "'size_bytes' is 'big', not int",
    ),
    Case("time-number", sidecar_edit(lambda d: d.update(received_at=5)), "'received_at' is 5"),
    Case("time-text", sidecar_edit(lambda d: d.update(received_at="soon")), "is no time"),
    Case(
        "headers-list",
        sidecar_edit(lambda d: d.update(headers=["x"])),
        "'headers' is ['x'], not dict",
    ),
    Case(
        "signature-word",
        sidecar_edit(lambda d: d.update(signature="TRUSTED")),
        "'signature' is 'TRUSTED'",
    ),
    Case("version", sidecar_edit(lambda d: d.update(version=7)), "version 7 is not supported"),
    Case(
        "unreadable-sidecar",
        loop_link(lambda e: metadata_key(e.task_id, e.body_sha256)),
        "unreadable sidecar",
        local_only=True,
    ),
    Case(
        "unreadable-body",
        loop_link(lambda e: raw_key(e.task_id, e.body_sha256)),
        "cannot read",
        in_sidecar=False,
        local_only=True,
    ),
]

GOOD = make_event("intact", received_at=at(0))


async def fill(storage: Storage, cases: list[Case]) -> None:
    await archive_event(storage, GOOD)
    for case in cases:
        await archive_event(storage, case.victim())
        await archive_event(storage, case.decoy())
    for case in cases:
        await case.mutate(storage, case.victim(), case.decoy())


def usable(cases: list[Case]) -> set[tuple[str, str]]:
    """(task id, body hash) of every entry that stays intact after ``cases``."""
    kept = {(GOOD.task_id, GOOD.body_sha256)}
    for case in cases:
        kept.add((case.decoy().task_id, case.decoy().body_sha256))
        if not case.damages_victim:
            kept.add((case.victim().task_id, case.victim().body_sha256))
    return kept


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def storage_environment(storage: StorageSettings) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": storage.backend,
        "DATA_DIR": str(storage.data_dir),
        "S3_ENDPOINT_URL": storage.s3_endpoint_url or "",
        "S3_BUCKET": storage.s3_bucket or "",
        "S3_PREFIX": storage.s3_prefix,
        "S3_REGION": storage.s3_region or "",
    }


@pytest.fixture(name="backend", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def fixture_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    """Local files, or a bucket on the session's S3 API server."""
    if request.param == "s3":
        settings: StorageSettings = request.getfixturevalue("s3_storage_settings")
        return settings
    return StorageSettings(backend="local", data_dir=tmp_path / "data")


@pytest.fixture(name="tampered")
def fixture_tampered(
    request: pytest.FixtureRequest, backend: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Case]:
    """An archive with one intact callback and one case of tampering; the CLI points at it."""
    case: Case = request.param
    if case.local_only and backend.backend != "local":
        pytest.skip("S3 has no unreadable object a client can make")

    async def prepare() -> None:
        async with open_storage(backend) as storage:
            await fill(storage, [case])

    asyncio.run(prepare())
    for name, value in storage_environment(backend).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens
    yield case


async def topic_size(bootstrap_servers: str, topic: str, partitions: int) -> int:
    # With no group aiokafka's stop() raises CancelledError: a throwaway group avoids it.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=f"test-size-{uuid.uuid4().hex[:8]}"
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def skipped_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("suno-archiver: skipped: ")]


@pytest.mark.parametrize("tampered", CASES, indirect=True, ids=[c.name for c in CASES])
class TestListAndExport:
    def test_list_names_the_bad_entry_and_lists_the_rest(
        self, tampered: Case, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One line naming the object and the problem; the intact entries still list."""
        status = run(["list", "--json"])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        listed = {(item["task_id"], item["body_sha256"]) for item in json.loads(captured.out)}
        if tampered.in_sidecar:
            assert status == EXIT_DAMAGED
            (line,) = skipped_lines(captured.err)
            assert tampered.bad_key() in line and tampered.problem in line, line
            assert listed == usable([tampered])
        else:
            # A sidecar can be read without its body: the body is checked when it is read.
            assert status == 0 and skipped_lines(captured.err) == []

    def test_export_refuses_the_bad_entry(
        self, tampered: Case, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """Exporting the damaged task answers with one line and no bytes."""
        task = tampered.decoy() if tampered.name == "refiled" else tampered.victim()
        argv = ["export", task.task_id]
        if tampered.name == "refiled":
            argv += ["--sha256", tampered.victim().body_sha256]
        assert run(argv) == 1
        captured = capsysbinary.readouterr()
        err = captured.err.decode()
        assert captured.out == b"" and "Traceback" not in err
        assert tampered.problem in err and tampered.bad_key() in err, err
        assert err.splitlines()[-1].startswith("suno-archiver: error: ")

    def test_export_of_an_intact_task_still_works(
        self, tampered: Case, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        assert run(["export", GOOD.task_id]) == 0
        assert capsysbinary.readouterr().out == GOOD.body


@pytest.mark.kafka
@pytest.mark.slow
async def test_replay_skips_every_bad_entry_and_sends_the_rest(
    settings: Settings,
    publisher: Publisher,
    backend: StorageSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``replay --all`` over every kind of damage at once: each bad entry is one line, the
    count is reported, the exit status is non-zero, and only intact entries are published
    (never A's body as task B)."""
    cases = [c for c in CASES if backend.backend == "local" or not c.local_only]
    async with open_storage(backend) as storage:
        await fill(storage, cases)
    for name, value in {**service_environment(settings), **storage_environment(backend)}.items():
        monkeypatch.setenv(name, value)

    status = await asyncio.to_thread(run, ["replay", "--all", "--quiet"])

    err = capsys.readouterr().err
    assert status == EXIT_DAMAGED and "Traceback" not in err
    lines = skipped_lines(err)
    assert len(lines) == len(cases), "\n".join(lines)
    for case in cases:
        assert [line for line in lines if case.bad_key() in line and case.problem in line], case
    assert f"{len(cases)} damaged archive entries not replayed" in err
    expected = usable(cases)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks
    # The CLI waited for every acknowledgement: the topic holds all it ever will.
    assert await topic_size(bootstrap, topic, settings.kafka.partitions) == len(expected)
    records = await read_topic(bootstrap, topic, len(expected))
    sent = {
        (e.task_id, e.body_sha256) for e in map(CallbackEvent.decode, (r.value for r in records))
    }
    assert sent == expected
    for record in records:  # a body always travels as its own task
        event = CallbackEvent.decode(record.value)
        assert record.key == event.task_id.encode()


def test_the_installed_program_answers_in_lines(tmp_path: Path) -> None:
    """``python -m services.archiver`` as a process: a damaged archive gives lines, exit 3."""
    storage = StorageSettings(backend="local", data_dir=tmp_path / "data")
    cases = [c for c in CASES if c.in_sidecar]
    asyncio.run(fill(LocalStorage(storage.data_dir), cases))
    result = subprocess.run(
        [sys.executable, "-m", "services.archiver", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            **storage_environment(storage),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        },
    )
    assert result.returncode == EXIT_DAMAGED, result.stderr
    assert "Traceback" not in result.stderr
    assert len(skipped_lines(result.stderr)) == len(cases)
    assert result.stdout.splitlines()[1].split()[1] == GOOD.task_id
