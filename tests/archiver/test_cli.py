"""The archive's read side and the list / export / replay --dry-run commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from services.archiver.archive import archive_event, raw_key
from services.archiver.catalog import CorruptArchiveError, Filters, read_body, scan
from services.archiver.cli import main
from services.common.settings import StorageSettings
from services.common.storage import LocalStorage, Storage, open_storage

from .support import at, callback_body, make_event

EVENTS = [
    make_event("task-a", received_at=at(0)),
    make_event("task-b", received_at=at(10), code=500),
    make_event("task-c", received_at=at(20)),
    make_event("task/d", received_at=at(30)),
]


async def populate(storage: Storage) -> None:
    for event in EVENTS:
        await archive_event(storage, event)


@pytest.fixture(name="data_dir")
def fixture_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An archive of four callbacks, and the environment pointing the CLI at it."""
    data_dir = tmp_path / "data"
    asyncio.run(populate(LocalStorage(data_dir)))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("STORAGE_BACKEND", "local")
    # Nothing listens here: a command that tried to reach Kafka would fail.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return data_dir


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    return code if isinstance(code, int) else (0 if code is None else 1)


class TestScan:
    async def test_filters(self, tmp_path: Path) -> None:
        """By task id, received-time range (since inclusive, until exclusive) and code."""
        storage = LocalStorage(tmp_path)
        await populate(storage)

        async def tasks(filters: Filters) -> list[str]:
            return sorted([entry.task_id async for entry in scan(storage, filters)])

        assert await tasks(Filters()) == ["task-a", "task-b", "task-c", "task/d"]
        assert await tasks(Filters(task_id="task/d")) == ["task/d"]
        assert await tasks(Filters(task_id="task")) == []
        assert await tasks(Filters(since=at(10), until=at(30))) == ["task-b", "task-c"]
        assert await tasks(Filters(code=500)) == ["task-b"]

    async def test_half_written_entry_is_not_listed(self, tmp_path: Path) -> None:
        """A sidecar whose body is missing (a write cut short) is not an archived callback."""
        storage = LocalStorage(tmp_path)
        await populate(storage)
        await storage.delete(raw_key("task-a", EVENTS[0].body_sha256))
        assert sorted([e.task_id async for e in scan(storage)]) == ["task-b", "task-c", "task/d"]

    async def test_body_without_sidecar_is_listed_from_its_content(self, tmp_path: Path) -> None:
        """Without its sidecar an entry still lists, with the code read from the body."""
        storage = LocalStorage(tmp_path)
        body = callback_body("lonely", code=501)
        event = make_event("lonely", body, code=501)
        await storage.put(raw_key("lonely", event.body_sha256), body)
        (entry,) = [e async for e in scan(storage)]
        assert (entry.task_id, entry.code, entry.received_at) == ("lonely", 501, None)
        assert entry.size_bytes == len(body)
        assert [e async for e in scan(storage, Filters(since=at(0)))] == []

    async def test_damaged_body_is_detected(self, tmp_path: Path) -> None:
        """read_body refuses a body that no longer hashes to its name."""
        storage = LocalStorage(tmp_path)
        await populate(storage)
        (entry,) = [e async for e in scan(storage, Filters(task_id="task-a"))]
        await storage.put(entry.body_key, b"tampered")
        with pytest.raises(CorruptArchiveError):
            await read_body(storage, entry)


class TestList:
    def test_table_in_received_order(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Task id, received time, code and size, oldest first."""
        assert run(["list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["RECEIVED_AT", "TASK_ID", "CODE", "SIZE", "SHA256"]
        assert [line.split()[1] for line in lines[1:]] == ["task-a", "task-b", "task-c", "task/d"]
        first = lines[1].split()
        assert first[0] == "2026-11-20T12:00:00+00:00"
        assert first[2:4] == ["200", str(len(EVENTS[0].body))]

    def test_json_with_filters(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--json gives one object per entry; --since/--until/--code narrow it."""
        assert run(["list", "--json", "--since", "2026-11-20T12:05:00Z", "--code", "200"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [item["task_id"] for item in listed] == ["task-c", "task/d"]
        assert listed[0] == {
            "task_id": "task-c",
            "received_at": "2026-11-20T12:20:00+00:00",
            "code": 200,
            "state": "complete",
            "size_bytes": len(EVENTS[2].body),
            "body_sha256": EVENTS[2].body_sha256,
            "key": raw_key("task-c", EVENTS[2].body_sha256),
        }
        assert run(["list", "--json", "--until", "2026-11-20"]) == 0
        assert json.loads(capsys.readouterr().out) == []

    def test_unknown_task_is_a_clear_error(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Non-zero exit and a one-line message, not a traceback."""
        assert run(["list", "--task-id", "nope"]) == 4
        err = capsys.readouterr().err
        assert "no archived callback for task 'nope'" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        "argv",
        [
            ["list", "--since", "yesterday"],
            ["list", "--since", "2026-11-21", "--until", "2026-11-20"],
            ["list", "--code", "ok"],
            ["export", "task-a", "--sha256", "xyz"],
            ["replay"],
        ],
    )
    def test_bad_arguments(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
    ) -> None:
        """Bad input exits 2 with argparse's usage and a message saying what was wrong."""
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err

    def test_bad_configuration(self, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad variable is named in the exit message."""
        monkeypatch.setenv("STORAGE_BACKEND", "floppy")
        with pytest.raises(SystemExit) as exited:
            main(["list"])
        assert "configuration error: STORAGE_BACKEND" in str(exited.value.code)


class TestExport:
    def test_to_stdout_byte_exact(
        self, data_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """The raw JSON exactly as received, as binary on stdout."""
        assert run(["export", "task/d"]) == 0
        assert capsysbinary.readouterr().out == EVENTS[3].body

    def test_to_file(self, data_dir: Path, tmp_path: Path) -> None:
        """-o writes the bytes to a file."""
        target = tmp_path / "out.json"
        assert run(["export", "task-a", "-o", str(target)]) == 0
        assert target.read_bytes() == EVENTS[0].body

    def test_several_bodies_need_a_choice(
        self, data_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """With two bodies for one task the error lists them; --sha256 picks one."""
        second = make_event("task-a", callback_body("task-a", pitch=70), received_at=at(40))
        asyncio.run(archive_event(LocalStorage(data_dir), second))
        assert run(["export", "task-a"]) == 1
        err = capsysbinary.readouterr().err.decode()
        assert second.body_sha256 in err and EVENTS[0].body_sha256 in err
        assert run(["export", "task-a", "--sha256", second.body_sha256.upper()]) == 0
        assert capsysbinary.readouterr().out == second.body
        assert run(["export", "task-a", "--sha256", "f" * 64]) == 4

    def test_unknown_task(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(["export", "nope"]) == 4
        assert "no archived callback for task 'nope'" in capsys.readouterr().err

    def test_damaged_body_is_refused(
        self, data_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """Export never hands out bytes that are not what was archived."""
        path = data_dir / "raw" / "task-a" / f"{EVENTS[0].body_sha256}.json"
        path.write_bytes(b"{}")
        assert run(["export", "task-a"]) == 1
        captured = capsysbinary.readouterr()
        assert captured.out == b""
        assert b"does not hash to its name" in captured.err


class TestReplayDryRun:
    def test_lists_and_sends_nothing(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--dry-run lists the selection and never connects to Kafka (nothing listens)."""
        assert run(["replay", "--dry-run", "--since", "2026-11-20T12:10:00"]) == 0
        captured = capsys.readouterr()
        assert [line.split()[1] for line in captured.out.splitlines()[1:]] == [
            "task-b",
            "task-c",
            "task/d",
        ]
        assert "would replay 3 callback(s)" in captured.err

    def test_unreachable_kafka_is_a_clear_error(
        self, data_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --dry-run, a missing broker is a message and exit 1, not a traceback."""
        assert run(["replay", "--task-id", "task-a", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err


@pytest.mark.s3
class TestOnS3:
    def test_list_and_export(
        self,
        s3_storage_settings: StorageSettings,
        monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes],
    ) -> None:
        """The commands work the same against the S3 backend."""

        async def fill() -> None:
            async with open_storage(s3_storage_settings) as storage:
                await populate(storage)

        asyncio.run(fill())
        env: dict[str, Callable[[], str | None]] = {
            "STORAGE_BACKEND": lambda: "s3",
            "S3_ENDPOINT_URL": lambda: s3_storage_settings.s3_endpoint_url,
            "S3_BUCKET": lambda: s3_storage_settings.s3_bucket,
            "S3_PREFIX": lambda: s3_storage_settings.s3_prefix,
            "S3_REGION": lambda: s3_storage_settings.s3_region,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value() or "")
        assert run(["list", "--json", "--code", "500"]) == 0
        listed = json.loads(capsysbinary.readouterr().out)
        assert [item["task_id"] for item in listed] == ["task-b"]
        assert run(["export", "task/d"]) == 0
        assert capsysbinary.readouterr().out == EVENTS[3].body
