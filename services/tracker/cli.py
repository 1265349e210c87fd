"""``suno-tracker``: run the tracker; submit a MIDI request; list tasks and their states;
show one task's history.

Commands take their settings from the environment (the same variables as the service) and
answer bad input with a one-line message and a non-zero exit, never a traceback.
``submit`` records the request and submits it itself, through the same claim as the
service, so a request id submitted twice (here, on the topic or over HTTP) still makes
one provider task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NoReturn

import aiohttp
from prometheus_client import CollectorRegistry

from services.common.errors import ConfigError, PipelineError
from services.common.keys import REQUEST_ID_RULE, is_valid_request_id
from services.common.main import load_settings, serve
from services.common.settings import Settings

from .api import task_json
from .app import check_settings, create_app, replica_name
from .metrics import ProviderMetrics
from .provider import ProviderClient
from .ratelimit import PostgresRateLimiter
from .registry import Registry, Task, TaskState
from .submit import submit_request

__all__ = ["build_parser", "main"]

PROGRAM = "suno-tracker"
EXIT_NOT_FOUND = 4


def _request_id(text: str) -> str:
    if not is_valid_request_id(text):
        raise argparse.ArgumentTypeError(REQUEST_ID_RULE)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="submit, track and reconcile tasks until SIGTERM")
    submit = commands.add_parser("submit", help="request MIDI for a finished separation")
    submit.add_argument("source_task_id", help="the split_stem separation's task id")
    submit.add_argument("--audio-id", help="the separation's track to transcribe")
    submit.add_argument(
        "--request-id",
        type=_request_id,
        default=None,
        help="idempotency key: the same id never makes two tasks (default: a new one)",
    )
    tasks = commands.add_parser("tasks", help="list tasks, newest first, with their states")
    tasks.add_argument("--state", choices=[s.value for s in TaskState])
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--json", action="store_true", help="one JSON object per line")
    tasks.add_argument(
        "--unknown", action="store_true", help="only requests whose submission outcome is unknown"
    )
    show = commands.add_parser("task", help="one task's transitions, deliveries and polls")
    show.add_argument("id", help="a provider task id or one of our request ids")
    resolve = commands.add_parser(
        "resolve", help="settle a request whose submission outcome is unknown (operators)"
    )
    resolve.add_argument("request_id", type=_request_id)
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--task-id", help="the provider task it made (found in the provider's records)"
    )
    how.add_argument("--failed", metavar="REASON", help="it made no task: close it as failed")
    how.add_argument("--resubmit", action="store_true", help="it made no task: submit it again")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        serve(PROGRAM, create_app, lambda s: (s.tracker.host, s.tracker.port))
        return
    settings = load_settings(PROGRAM)
    commands = {"submit": _submit, "tasks": _tasks, "task": _task, "resolve": _resolve}
    try:
        status = asyncio.run(commands[args.command](settings, args))
    except PipelineError as exc:  # configuration, PostgreSQL, the provider
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(status)


def _fail(message: str, status: int) -> NoReturn:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    sys.exit(status)


async def _registry(settings: Settings) -> Registry:
    url = settings.tracker.database_url
    if url is None or not url.get().strip():
        raise ConfigError("set DATABASE_URL to the registry's PostgreSQL URL")
    return await Registry.connect(url.get(), max_size=2)


async def _submit(settings: Settings, args: argparse.Namespace) -> int:
    tracker = settings.tracker
    check_settings(tracker)
    request_id = args.request_id or uuid.uuid4().hex
    registry = await _registry(settings)
    try:
        task, _created = await registry.request(
            request_id, args.source_task_id, args.audio_id, tracker.callback_url or ""
        )
        limiter = PostgresRateLimiter(
            registry.pool, tracker.rate_limit_requests, tracker.rate_limit_window_seconds
        )
        async with aiohttp.ClientSession() as session:
            client = ProviderClient(
                session, tracker, limiter=limiter, metrics=ProviderMetrics(CollectorRegistry())
            )
            result = await submit_request(
                registry,
                client,
                request_id,
                owner=f"cli:{replica_name()}",
                callback_base=tracker.callback_url or "",
                poll_after_seconds=tracker.poll_after_seconds,
            )
        task = await registry.get_by_request(request_id) or task
    finally:
        await registry.close()
    what = {
        "submitted": f"submitted: task {result.task_id}",
        "not_claimed": f"already {task.state} (request seen before; nothing sent again)",
        "rejected": f"rejected by the provider: {result.reason}",
        "unknown": f"outcome unknown, not resent: {result.reason}",
        "deferred": f"not sent yet (the provider is busy; the tracker retries): {result.reason}",
    }[result.outcome]
    print(f"request {request_id}: {what}")
    return {"rejected": 2, "unknown": 3}.get(result.outcome, 0)


async def _tasks(settings: Settings, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        _fail("--limit must be from 1 to 10000", 2)
    registry = await _registry(settings)
    try:
        if args.unknown:
            tasks = (await registry.unknown_submissions())[: args.limit]
        else:
            state = TaskState(args.state) if args.state else None
            tasks = await registry.list_tasks(state, args.limit)
    finally:
        await registry.close()
    if args.json:
        for task in tasks:
            print(json.dumps(task_json(task)))
        return 0
    print(f"{'STATE':<10} {'TASK':<34} {'REQUEST':<34} {'ORIGIN':<8} {'POLLS':>5}  UPDATED")
    for task in tasks:
        print(
            f"{task.state.value:<10} {task.task_id or '-':<34} {task.request_id or '-':<34} "
            f"{task.origin:<8} {task.poll_count:>5}  {_time(task.updated_at)}"
        )
    return 0


async def _task(settings: Settings, args: argparse.Namespace) -> int:
    registry = await _registry(settings)
    try:
        task = await registry.get(args.id) or await registry.get_by_request(args.id)
        if task is None:
            _fail(f"no task or request {args.id!r} in the registry", EXIT_NOT_FOUND)
        transitions = await registry.history(task.pk)
        deliveries = await registry.deliveries(task.pk)
        polls = await registry.polls(task.pk)
    finally:
        await registry.close()
    _print_task(task)
    for t in transitions:
        print(f"  {_time(t.at)}  {t.from_state or '-'} -> {t.to_state}  {t.reason or ''}")
    for d in deliveries:
        verified = "verified" if d.verified else "UNVERIFIED"
        print(f"  {_time(d.received_at)}  delivery by {d.source}, {verified}, {d.body_sha256[:16]}")
    for p in polls:
        print(f"  {_time(p.at)}  poll: {p.outcome} {p.detail or ''}")
    return 0


def _print_task(task: Task) -> None:
    print(
        f"task {task.task_id or '-'}  request {task.request_id or '-'}  state {task.state.value}"
        f"  origin {task.origin}  source {task.source_task_id or '-'}"
    )


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


async def _resolve(settings: Settings, args: argparse.Namespace) -> int:
    """An operator's decision on a request of unknown outcome, after checking the provider."""
    registry = await _registry(settings)
    try:
        task = await registry.get_by_request(args.request_id)
        if task is None:
            _fail(f"no request {args.request_id!r} in the registry", EXIT_NOT_FOUND)
        if task.state is not TaskState.REQUESTED or task.task_id is not None:
            _fail(f"request {args.request_id!r} is {task.state.value}: nothing to resolve", 2)
        if args.task_id:
            # Polled at once: the poll fetches its result, or waits for it like any task.
            task = await registry.submitted(args.request_id, args.task_id, timedelta(0))
            what = f"linked to task {task.task_id}; it is polled now"
        elif args.failed:
            task = await registry.submission_rejected(
                args.request_id, f"closed by an operator: {args.failed}"
            )
            what = "closed as failed"
        elif await registry.reopen_submission(args.request_id):
            what = "reopened; the tracker submits it again"
        else:
            _fail(f"request {args.request_id!r} was never submitted: nothing to reopen", 2)
    finally:
        await registry.close()
    print(f"request {args.request_id}: {what}")
    return 0
