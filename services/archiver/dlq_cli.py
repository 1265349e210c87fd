"""``suno-archiver dlq list|redrive``: read the dead-letter topic and re-send chosen records.

See :mod:`services.archiver.dlq` for what a redrive publishes and why it never publishes a
dead letter twice; the runbook is in ``docs/archive.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import groupby

from tqdm import tqdm

from services.common.errors import CommandError
from services.common.kafka import Publisher
from services.common.settings import Settings

from .dlq import DeadLetterRecord, DlqFilters, already_redriven, read_dead_letters, redrive_one

__all__ = ["add_dlq_commands", "check_dlq_arguments", "dlq_command", "parse_offset"]

#: Exit statuses shared with the archive commands (see services.archiver.cli).
EXIT_REFUSED = 3
EXIT_NOT_FOUND = 4


def parse_offset(text: str) -> tuple[int, int]:
    """``PARTITION/OFFSET`` of a dead letter, as ``dlq list`` prints it."""
    partition, slash, offset = text.partition("/")
    if not slash or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PARTITION/OFFSET (e.g. 0/42, as `dlq list` prints it)"
        )
    return int(partition), int(offset)


def add_dlq_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    parse_time: Callable[[str], datetime],
) -> None:
    dlq = commands.add_parser("dlq", help="list dead letters, re-send them to their source topic")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list dead letters (filters below)")
    redrive = actions.add_parser(
        "redrive", help="re-publish dead letters to their source topic, each at most once"
    )
    for command in (listing, redrive):
        command.add_argument(
            "--reason", action="append", default=[], help="dlq.reason (repeatable)"
        )
        command.add_argument("--source-topic", help="only dead letters from this topic")
        command.add_argument(
            "--since", type=parse_time, help="dead-lettered at or after (ISO 8601, UTC)"
        )
        command.add_argument(
            "--until", type=parse_time, help="dead-lettered before (ISO 8601, UTC)"
        )
        command.add_argument(
            "--offset",
            type=parse_offset,
            action="append",
            default=[],
            metavar="PARTITION/OFFSET",
            help="this dead letter (repeatable)",
        )
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    redrive.add_argument("--all", action="store_true", help="every dead letter")
    redrive.add_argument("--dry-run", action="store_true", help="list what would be sent")
    redrive.add_argument(
        "--force",
        action="store_true",
        help="send even when the source topic no longer shows what was redriven before",
    )
    redrive.add_argument("--quiet", action="store_true", help="no progress bar or lines")


def check_dlq_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    selection = args.reason or args.source_topic or args.since or args.until or args.offset
    if args.dlq_command == "redrive" and not (args.all or selection):
        parser.error(
            "dlq redrive needs --all, or a selection: --reason, --source-topic, --since, "
            "--until, --offset"
        )


async def dlq_command(settings: Settings, args: argparse.Namespace) -> int:
    filters = DlqFilters(
        reasons=frozenset(args.reason),
        source_topic=args.source_topic,
        since=args.since,
        until=args.until,
        offsets=frozenset(args.offset),
    )
    letters = await read_dead_letters(settings.kafka, filters)
    missing = filters.offsets - {(letter.partition, letter.offset) for letter in letters}
    if missing:
        refs = ", ".join(f"{p}/{o}" for p, o in sorted(missing))
        raise CommandError(
            f"no dead letter matching the selection at {refs} on {settings.kafka.topics.dlq} "
            "(see: suno-archiver dlq list)",
            EXIT_NOT_FOUND,
        )
    if args.dlq_command == "list" or args.dry_run:
        if getattr(args, "json", False):
            print(json.dumps([letter.summary() for letter in letters], indent=2))
        else:
            print(format_dead_letters(letters))
        if args.dlq_command == "redrive":
            print(f"dry run: would redrive at most {len(letters)} dead letter(s)", file=sys.stderr)
        return 0
    return await _redrive(settings, letters, force=args.force, quiet=args.quiet)


def format_dead_letters(letters: Sequence[DeadLetterRecord]) -> str:
    rows = [("DLQ", "DEAD_LETTERED_AT", "REASON", "SOURCE", "ERROR")]
    for letter in letters:
        error = (letter.header("dlq.error") or "").replace("\n", " ")
        rows.append(
            (
                letter.ref,
                letter.timestamp.isoformat(timespec="seconds"),
                letter.reason or "-",
                letter.source(),
                error if len(error) <= 60 else error[:59] + "…",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _redrive(
    settings: Settings, letters: Sequence[DeadLetterRecord], *, force: bool, quiet: bool
) -> int:
    """Send each dead letter not yet redriven; one line per refusal; the totals at the end."""
    refused = [letter for letter in letters if letter.source_topic is None]
    for letter in refused:
        _say(f"refused: dead letter {letter.ref} has no dlq.source.topic header")
    usable = sorted(
        (letter for letter in letters if letter.source_topic is not None),
        key=lambda letter: (str(letter.source_topic), letter.partition, letter.offset),
    )
    sent = done_before = 0
    publisher = Publisher(settings.kafka, "archiver-dlq-redrive")
    await publisher.start()
    try:
        with _progress(len(usable), quiet) as progress:
            for topic, group in groupby(usable, key=lambda letter: str(letter.source_topic)):
                batch = list(group)
                seen = await already_redriven(settings.kafka, topic, batch, force=force)
                for letter in batch:
                    if letter.redrive_id in seen:
                        done_before += 1
                    else:
                        await redrive_one(publisher, letter)
                        sent += 1
                        if not quiet:
                            _line(progress, f"redriven {letter.ref} -> {topic}")
                    progress.update()
    finally:
        await publisher.stop()
    print(
        f"redriven {sent} dead letter(s); {done_before} already redriven before, not sent "
        f"again; {len(refused)} refused",
        file=sys.stderr,
    )
    return EXIT_REFUSED if refused else 0


def _progress(total: int, quiet: bool) -> tqdm[None]:
    """A bar on a terminal; without one (or with --quiet) no bar: plain lines or nothing."""
    return tqdm(total=total, unit="letter", file=sys.stderr, disable=quiet or not _tty())


def _tty() -> bool:
    return sys.stderr.isatty()


def _line(progress: tqdm[None], text: str) -> None:
    """One plain line per record when there is no bar (not a terminal), none under a bar."""
    if progress.disable:
        print(text, file=sys.stderr)


def _say(text: str) -> None:
    tqdm.write(f"suno-archiver: {text}", file=sys.stderr)
