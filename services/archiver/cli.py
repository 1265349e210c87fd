"""``suno-archiver``: run the archiving consumer; list, export and replay the archive;
list and redrive dead letters (``dlq``, in :mod:`services.archiver.dlq_cli`).

Every command takes its settings from the environment (the same variables as the service)
and answers bad input with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from services.common.errors import CommandError, PipelineError
from services.common.kafka import Publisher
from services.common.main import load_settings, serve
from services.common.replays import ReplayMark
from services.common.settings import Settings
from services.common.storage import open_storage

from .app import create_app
from .catalog import ArchiveEntry, BadEntry, Filters, read_body, scan
from .dlq_cli import add_dlq_commands, check_dlq_arguments, dlq_command
from .replay import replay

__all__ = ["build_parser", "main"]

PROGRAM = "suno-archiver"

#: Exit status for "nothing matched" (unknown task, empty selection with a filter).
EXIT_NOT_FOUND = 4

#: Exit status when the command finished but skipped damaged or inconsistent entries.
EXIT_DAMAGED = 3


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-24 or 2026-11-24T13:05:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hex digits)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Archive every raw Suno MIDI callback byte-exact; list, export, replay.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="consume callback events and archive them until SIGTERM")

    def add_filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--task-id", help="only this task")
        command.add_argument(
            "--since", type=parse_time, help="received at or after this time (ISO 8601, UTC)"
        )
        command.add_argument(
            "--until", type=parse_time, help="received before this time (ISO 8601, UTC)"
        )

    listing = commands.add_parser("list", help="list archived callbacks")
    add_filters(listing)
    listing.add_argument("--code", type=int, help="only callbacks with this code")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    export = commands.add_parser("export", help="write one archived callback's raw JSON")
    export.add_argument("task_id", metavar="TASK_ID")
    export.add_argument("--sha256", type=parse_sha256, help="which body, when the task has several")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    again = commands.add_parser(
        "replay", help="re-publish archived callbacks to the callbacks topic, marked as replays"
    )
    add_filters(again)
    again.add_argument("--all", action="store_true", help="replay the whole archive")
    again.add_argument(
        "--dry-run", action="store_true", help="list what would be sent, send nothing"
    )
    again.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dlq_commands(commands, parse_time)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        serve(PROGRAM, create_app, lambda s: (s.archiver.host, s.archiver.port))
        return
    if args.command == "replay" and not (args.all or args.task_id or args.since or args.until):
        parser.error("replay needs --all, or a selection: --task-id, --since, --until")
    if args.command == "dlq":
        check_dlq_arguments(parser, args)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until and since >= until:
        parser.error("--since must be before --until")
    settings = load_settings(PROGRAM)
    commands = {
        "list": list_command,
        "export": export_command,
        "replay": replay_command,
        "dlq": dlq_command,
    }
    try:
        status = asyncio.run(commands[args.command](settings, args))
    except CommandError as exc:
        _fail(str(exc), exc.status)
    except PipelineError as exc:  # storage, Kafka, configuration: say what went wrong
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(status)


def _fail(message: str, status: int) -> NoReturn:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    sys.exit(status)


async def _select(
    settings: Settings, filters: Filters
) -> tuple[list[ArchiveEntry], list[BadEntry]]:
    """The entries matching ``filters``, oldest first, and the bad ones (each reported)."""
    async with open_storage(settings.storage) as storage:
        return await _split(scan(storage, filters))


async def _split(
    found: AsyncIterator[ArchiveEntry | BadEntry],
) -> tuple[list[ArchiveEntry], list[BadEntry]]:
    entries, bad = [], []
    async for item in found:
        if isinstance(item, BadEntry):
            _report(str(item))
            bad.append(item)
        else:
            entries.append(item)
    return sorted(entries, key=ArchiveEntry.sort_key), bad


def _report(line: str) -> None:
    """One line on stderr for one entry skipped (above a progress bar, if one is drawn)."""
    tqdm.write(f"{PROGRAM}: skipped: {line}", file=sys.stderr)


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        task_id=args.task_id,
        since=args.since,
        until=args.until,
        code=getattr(args, "code", None),
    )


def format_table(entries: Sequence[ArchiveEntry]) -> str:
    rows = [("RECEIVED_AT", "TASK_ID", "CODE", "SIZE", "SHA256")]
    for entry in entries:
        rows.append(
            (
                entry.received_at.isoformat(timespec="seconds") if entry.received_at else "-",
                entry.task_id,
                "-" if entry.code is None else str(entry.code),
                str(entry.size_bytes),
                entry.body_sha256[:16],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def list_command(settings: Settings, args: argparse.Namespace) -> int:
    entries, bad = await _select(settings, _filters(args))
    if args.task_id and not entries and not bad:
        raise CommandError(_nothing_for(args.task_id), EXIT_NOT_FOUND)
    if args.json:
        print(json.dumps([entry.summary() for entry in entries], indent=2))
    else:
        print(format_table(entries))
    return _damaged(bad, "listed")


def _damaged(bad: Sequence[object], verb: str) -> int:
    """The exit status after ``bad`` entries were reported one by one: say how many."""
    if not bad:
        return 0
    print(
        f"{PROGRAM}: {len(bad)} damaged archive entr{'y' if len(bad) == 1 else 'ies'} "
        f"not {verb} (see above)",
        file=sys.stderr,
    )
    return EXIT_DAMAGED


def _nothing_for(task_id: str) -> str:
    return f"no archived callback for task {task_id!r} (see: {PROGRAM} list)"


async def export_command(settings: Settings, args: argparse.Namespace) -> int:
    async with open_storage(settings.storage) as storage:
        entries, bad = await _split(scan(storage, Filters(task_id=args.task_id)))
        if bad and not entries:
            raise CommandError(f"task {args.task_id!r} has no usable archived callback")
        if args.sha256:
            entries = [entry for entry in entries if entry.body_sha256 == args.sha256]
            if not entries:
                raise CommandError(
                    f"task {args.task_id!r} has no archived callback with SHA-256 {args.sha256}",
                    EXIT_NOT_FOUND,
                )
        if not entries:
            raise CommandError(_nothing_for(args.task_id), EXIT_NOT_FOUND)
        if len(entries) > 1:
            choices = "; ".join(
                f"{entry.body_sha256} (received {entry.received_at}, code {entry.code})"
                for entry in sorted(entries, key=ArchiveEntry.sort_key)
            )
            raise CommandError(
                f"task {args.task_id!r} has {len(entries)} archived callbacks; "
                f"choose one with --sha256: {choices}"
            )
        body = await read_body(storage, entries[0])
    if args.output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        try:
            await asyncio.to_thread(_write_file, args.output, body)
        except OSError as exc:
            raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"wrote {len(body)} bytes to {args.output}", file=sys.stderr)
    return 0


def _write_file(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


async def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    filters = _filters(args)
    entries, bad = await _select(settings, filters)
    if args.task_id and not entries and not bad:
        raise CommandError(_nothing_for(args.task_id), EXIT_NOT_FOUND)
    topic = settings.kafka.topics.callbacks
    if args.dry_run:
        if entries:
            print(format_table(entries))
        print(f"dry run: would replay {len(entries)} callback(s) to {topic}", file=sys.stderr)
        return _damaged(bad, "replayable")
    if not entries:
        print("nothing to replay", file=sys.stderr)
        return _damaged(bad, "replayed")
    publisher = Publisher(settings.kafka, "archiver-replay")
    await publisher.start()
    try:
        missing = await publisher.missing_topics([topic])
        if missing:
            raise CommandError(f"the topic {topic} does not exist on the cluster")
        sent, skipped = await _replay_with_progress(settings, publisher, entries, args.quiet)
    finally:
        await publisher.stop()
    print(f"replayed {sent} callback(s) to {topic}", file=sys.stderr)
    return _damaged([*bad, *skipped], "replayed")


async def _replay_with_progress(
    settings: Settings, publisher: Publisher, entries: Sequence[ArchiveEntry], quiet: bool
) -> tuple[int, list[str]]:
    """Replay ``entries`` under a progress bar; how many were sent, and why others were not."""
    skipped: list[str] = []
    with tqdm(total=len(entries), unit="callback", file=sys.stderr, disable=quiet) as progress:

        def skip(_entry: ArchiveEntry, why: str) -> None:
            _report(why)
            skipped.append(why)
            progress.update()

        async with open_storage(settings.storage) as storage:
            sent = await replay(
                storage,
                publisher,
                settings.kafka.topics.callbacks,
                entries,
                on_sent=lambda _entry: progress.update(),
                on_skipped=skip,
                mark=ReplayMark(via="cli"),
            )
    return sent, skipped
