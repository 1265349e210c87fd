"""The console's read API (``/api/v1/``): tasks, counts, one task's timeline, its notes,
its MIDI file and its raw body. Described in ``openapi.yaml`` beside this module.

Read-only: nothing here writes to the registry or the storage. Every bad parameter is a
400 with a JSON error naming it; a task or file that is not there is a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.errors import InvalidRequestError, ObjectNotFoundError
from services.common.http import http_error
from services.common.keys import is_valid_request_id, is_valid_task_id, task_key
from services.common.settings import ConsoleSettings
from services.common.storage import Storage
from services.processor.app import midi_key, preview_key, quantized_key
from services.processor.preview import MEDIA_TYPE as PREVIEW_MEDIA_TYPE
from services.tracker.registry import Registry, Task, TaskState

from .notes import NotesCache, newest_body, notes_document
from .queries import (
    MAX_LIMIT,
    MIN_QUERY_LENGTH,
    Cursor,
    TaskFilter,
    counts,
    find_task,
    list_tasks,
    task_detail,
)

__all__ = ["API_PREFIX", "DEFAULT_LIMIT", "REGISTRY", "STORAGE", "setup_api", "with_task"]

API_PREFIX = "/api/v1"
DEFAULT_LIMIT = 50

REGISTRY = web.AppKey("console_registry", Registry)
STORAGE = web.AppKey("console_storage", Storage)
NOTES_CACHE = web.AppKey("console_notes_cache", NotesCache)


def setup_api(app: web.Application, settings: ConsoleSettings) -> None:
    app[NOTES_CACHE] = NotesCache(settings.notes_cache_bytes)
    app.router.add_get(f"{API_PREFIX}/tasks", _list)
    app.router.add_get(f"{API_PREFIX}/counts", _counts)
    app.router.add_get(f"{API_PREFIX}/tasks/{{id}}", _show)
    app.router.add_get(f"{API_PREFIX}/tasks/{{id}}/notes", _notes)
    app.router.add_get(f"{API_PREFIX}/tasks/{{id}}/raw", _raw)
    for name in _STORED_FILES:
        app.router.add_get(f"{API_PREFIX}/tasks/{{id}}/{name}", _stored_file_route(name))


def _filter(query: Any) -> tuple[TaskFilter, int, Cursor | None]:
    """The list's parameters; :class:`InvalidRequestError` for the first wrong one."""
    state = None
    if (text := query.get("state")) is not None:
        try:
            state = TaskState(text)
        except ValueError:
            choices = ", ".join(s.value for s in TaskState)
            raise InvalidRequestError("invalid_state", f"state must be one of {choices}") from None
    q = query.get("q")
    if q is not None and (len(q) < MIN_QUERY_LENGTH or not q.isascii() or not q.isprintable()):
        raise InvalidRequestError(
            "invalid_query",
            f"q must be at least {MIN_QUERY_LENGTH} printable ASCII characters: "
            "a task id or request id, or the start of one",
        )
    where = TaskFilter(
        state, _time(query, "since"), _time(query, "until"), q, _has_dead_letters(query)
    )
    try:
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError(
            "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}"
        )
    cursor = None
    if (text := query.get("cursor")) is not None:
        cursor = Cursor.decode(text)
    return where, limit, cursor


def _has_dead_letters(query: Any) -> bool | None:
    text = query.get("has_dead_letters")
    if text is None:
        return None
    if text not in ("true", "false"):
        raise InvalidRequestError(
            "invalid_has_dead_letters", "has_dead_letters must be true or false"
        )
    return bool(text == "true")


def _time(query: Any, name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
        # Without an offset, UTC: the registry's times are all UTC.
        value = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequestError(
            f"invalid_{name}",
            f"{name} must be an ISO 8601 date and time, e.g. 2026-11-30T12:00:00Z",
        ) from None
    return value


async def _list(request: web.Request) -> web.Response:
    try:
        where, limit, cursor = _filter(request.query)
    except InvalidRequestError as exc:
        return http_error(400, exc.code, str(exc))
    page = await list_tasks(request.app[REGISTRY], where, limit=limit, cursor=cursor)
    return _json({"tasks": page.tasks, "next_cursor": page.next_cursor})


async def _counts(request: web.Request) -> web.Response:
    return _json(await counts(request.app[REGISTRY]))


TaskHandler = Callable[[web.Request, Task], Awaitable[web.Response]]


def with_task(handler: TaskHandler) -> Handler:
    """The handler, given the task ``{id}`` names (task id or request id); 404 without one."""

    async def handle(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        # An id no task can have (a NUL, say, which PostgreSQL's text cannot even hold)
        # is not looked up.
        known = is_valid_task_id(key) or is_valid_request_id(key)
        task = await find_task(request.app[REGISTRY], key) if known else None
        if task is None:
            return http_error(404, "not_found", f"no task or request {key!r} in the registry")
        return await handler(request, task)

    return handle


@with_task
async def _show(request: web.Request, task: Task) -> web.Response:
    document = await task_detail(request.app[REGISTRY], task)
    document["files"] = await _files(request.app[STORAGE], task)
    return _json(document)


async def _files(storage: Storage, task: Task) -> dict[str, bool]:
    """Which of the task's files exist: the page shows a control only for those (the
    quantized variant and the preview are made only where the processor is set to)."""
    if task.task_id is None:
        return dict.fromkeys(_STORED_FILES, False)
    found = await asyncio.gather(
        *(storage.exists(stored.key(task.task_id)) for stored in _STORED_FILES.values())
    )
    return dict(zip(_STORED_FILES, found, strict=True))


@with_task
async def _notes(request: web.Request, task: Task) -> web.Response:
    archived = await newest_body(request.app[REGISTRY], request.app[STORAGE], task)
    if archived is None:
        return _no_body(task)
    cache = request.app[NOTES_CACHE]
    body = cache.get(archived)
    if body is None:
        document = await asyncio.to_thread(notes_document, archived)
        if document is None:
            return http_error(
                422,
                "unreadable_body",
                f"the archived body {archived.body_sha256} is not a JSON object",
            )
        body = await asyncio.to_thread(orjson.dumps, document)
        cache.put(archived, body)
    return web.Response(body=body, content_type="application/json")


@dataclass(frozen=True, slots=True)
class _StoredFile:
    """A file of a task the processor may have written, as the API serves it."""

    key: Callable[[str], str]
    content_type: str
    #: The attachment's file name after the task key; ``None``: served inline.
    suffix: str | None
    what: str


#: The task's files by route name; ``files`` in the task document lists the same names.
#: The quantized variant and the preview exist only where the processor is set to make them.
_STORED_FILES: dict[str, _StoredFile] = {
    "midi": _StoredFile(midi_key, "audio/midi", ".mid", "MIDI file"),
    "quantized": _StoredFile(quantized_key, "audio/midi", ".quantized.mid", "quantized MIDI file"),
    # Inline, so that the page's <audio> plays it.
    "preview": _StoredFile(preview_key, PREVIEW_MEDIA_TYPE, None, "audio preview"),
}


def _stored_file_route(name: str) -> Handler:
    stored = _STORED_FILES[name]

    @with_task
    async def serve(request: web.Request, task: Task) -> web.Response:
        missing = http_error(404, f"no_{name}", f"no {stored.what} for task {task.task_id!r} (yet)")
        if task.task_id is None:
            return missing
        try:
            data = await request.app[STORAGE].get(stored.key(task.task_id))
        except ObjectNotFoundError:
            return missing
        if stored.suffix is None:
            return web.Response(body=data, content_type=stored.content_type)
        return _attachment(data, stored.content_type, f"{task_key(task.task_id)}{stored.suffix}")

    return serve


@with_task
async def _raw(request: web.Request, task: Task) -> web.Response:
    archived = await newest_body(request.app[REGISTRY], request.app[STORAGE], task)
    if archived is None:
        return _no_body(task)
    name = f"{task_key(archived.task_id)}-{archived.body_sha256[:12]}.json"
    return _attachment(archived.body, "application/json", name)


def _no_body(task: Task) -> web.Response:
    return http_error(
        404, "no_body", f"no archived result body for task {task.task_id or task.request_id!r}"
    )


def _attachment(body: bytes, content_type: str, filename: str) -> web.Response:
    """``filename`` is made of task_key's characters (letters, digits, ``-_%``): safe to quote."""
    return web.Response(
        body=body,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type="application/json")
