"""The tracker's HTTP API: submit a MIDI request, list tasks, show one task's history.

Every ``/v1/`` route needs a bearer token from ``TRACKER_API_TOKENS``; with none
configured the API refuses everything (fail closed), while health and metrics stay open.
A request is recorded, then submitted by the submitter loop: the answer is 202 with the
request's state, and the same ``request_id`` again answers 200 with the same row.
"""

from __future__ import annotations

import dataclasses
import hmac
import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.http import http_error
from services.common.keys import REQUEST_ID_RULE, is_valid_request_id
from services.common.web import SETTINGS

from .registry import REGISTRY as TASKS
from .registry import Task, TaskState
from .submit import WAKE_SUBMITTER

__all__ = ["API_PREFIX", "setup_api", "task_json"]

API_PREFIX = "/v1/midi"
#: Largest request body the API reads (the app's ``client_max_size``).
MAX_REQUEST_BYTES = 16 * 1024


def setup_api(app: web.Application) -> None:
    app.middlewares.append(_bearer_auth)
    app.router.add_post(f"{API_PREFIX}/requests", _submit)
    app.router.add_get(f"{API_PREFIX}/tasks", _list)
    app.router.add_get(f"{API_PREFIX}/tasks/{{task_id}}", _show)


@web.middleware
async def _bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX + "/"):
        return await handler(request)
    tokens = request.app[SETTINGS].tracker.api_tokens
    if not any(token.get() for token in tokens):
        return http_error(
            403, "api_disabled", "the tracker's API is off: set TRACKER_API_TOKENS to use it"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(
        token.get() and hmac.compare_digest(given.encode(), token.get().encode())
        for token in tokens
    ):
        return http_error(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>' with one of TRACKER_API_TOKENS",
            headers={"WWW-Authenticate": 'Bearer realm="suno-tracker"'},
        )
    return await handler(request)


async def _submit(request: web.Request) -> web.Response:
    raw = await request.read()  # past the app's client_max_size: 413, as a JSON error
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return http_error(400, "invalid_json", f"the body is not JSON: {exc}")
    problem, fields = _request_fields(body)
    if problem is not None:
        return http_error(400, "invalid_request", problem)
    settings = request.app[SETTINGS].tracker
    task, created = await request.app[TASKS].request(
        fields["request_id"],
        fields["source_task_id"],
        fields["audio_id"],
        settings.callback_url or "",
    )
    if created:
        request.app[WAKE_SUBMITTER].set()
    return _json({"created": created, "task": task_json(task)}, status=202 if created else 200)


def _request_fields(body: object) -> tuple[str | None, dict[str, Any]]:
    """The request's fields, or the one-line problem with them."""
    if not isinstance(body, dict):
        return "the body must be a JSON object", {}
    request_id = body.get("request_id", uuid.uuid4().hex)
    source = body.get("source_task_id")
    audio = body.get("audio_id")
    if not isinstance(request_id, str) or not is_valid_request_id(request_id):
        return REQUEST_ID_RULE, {}
    if not isinstance(source, str) or not source.strip() or len(source) > 128:
        return (
            "source_task_id (the split_stem separation's task id, 1-128 characters) is required",
            {},
        )
    if audio is not None and (not isinstance(audio, str) or len(audio) > 128):
        return "audio_id must be a string of at most 128 characters when given", {}
    unknown = sorted(set(body) - {"request_id", "source_task_id", "audio_id"})
    if unknown:
        return f"unknown fields: {', '.join(unknown)}", {}
    return None, {"request_id": request_id, "source_task_id": source, "audio_id": audio}


async def _list(request: web.Request) -> web.Response:
    state_text = request.query.get("state")
    state = None
    if state_text is not None:
        try:
            state = TaskState(state_text)
        except ValueError:
            choices = ", ".join(s.value for s in TaskState)
            return http_error(400, "invalid_state", f"state must be one of {choices}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        return http_error(400, "invalid_limit", "limit must be an integer from 1 to 1000")
    tasks = await request.app[TASKS].list_tasks(state, limit=limit)
    return _json({"tasks": [task_json(task) for task in tasks]})


async def _show(request: web.Request) -> web.Response:
    registry = request.app[TASKS]
    key = request.match_info["task_id"]
    task = await registry.get(key) or await registry.get_by_request(key)
    if task is None:
        return http_error(404, "not_found", f"no task or request {key!r} in the registry")
    return _json(
        {
            "task": task_json(task),
            "transitions": [_plain(t) for t in await registry.history(task.pk)],
            "deliveries": [_plain(d) for d in await registry.deliveries(task.pk)],
            "polls": [_plain(p) for p in await registry.polls(task.pk)],
        }
    )


def task_json(task: Task) -> dict[str, Any]:
    return _plain(task)


def _plain(value: Any) -> dict[str, Any]:
    return {
        name: item.isoformat() if isinstance(item, datetime) else item
        for name, item in dataclasses.asdict(value).items()
    }


def _json(document: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")
