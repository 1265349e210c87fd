"""The simulated provider as an aiohttp application: its API under ``/api/v1/midi/``.

Every API request passes the provider's edge first, in this order: the rate window (429),
the injected faults (slow answers, 429/430/455/500), the Bearer key (401); then the handler.
Errors are the provider's JSON ``{"code": N, "msg": "..."}``; the HTTP status mirrors ``code``
or is always 200, as ``SimConfig.error_status`` says. Every API request, served or refused,
is logged for ``GET /_sim/requests``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from .config import SimConfig
from .control import add_control_routes
from .delivery import run_task
from .keys import JOBS, SESSION, STATE
from .state import SimState

__all__ = ["GENERATE_PATH", "RECORD_INFO_PATH", "ProviderError", "create_app"]

GENERATE_PATH: Final = "/api/v1/midi/generate"
RECORD_INFO_PATH: Final = "/api/v1/midi/record-info"

#: The provider's wording is undocumented; these say what happened.
_FAULT_MSGS: Final = {
    429: "rate limit exceeded, retry later",
    430: "request frequency too high, retry later",
    455: "system maintenance, retry later",
    500: "internal error, retry later",
}
_REASONS: Final = {430: "Too Many Requests", 455: "Maintenance"}

_log = structlog.get_logger("devenv.simulator")


class ProviderError(Exception):
    """An answer in the provider's error shape."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg


def create_app(config: SimConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The simulator; ``clock`` is the wall clock of its times and of its rate window."""
    app = web.Application(middlewares=[provider_edge], client_max_size=64 * 1024)
    app[STATE] = SimState(config, clock)
    app[JOBS] = set()
    app.cleanup_ctx.append(_callback_session)
    app.router.add_post(GENERATE_PATH, generate)
    app.router.add_get(RECORD_INFO_PATH, record_info)
    add_control_routes(app)
    return app


async def _callback_session(app: web.Application) -> AsyncIterator[None]:
    """The client callbacks go out with; running tasks are cancelled before it closes."""
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        yield
        running = app[JOBS]
        jobs = [*running]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def answer(config: SimConfig, code: int, msg: str, data: Any = None) -> web.Response:
    """A provider answer; errors carry no ``data`` key."""
    body: dict[str, Any] = {"code": code, "msg": msg}
    if code == 200:
        body["data"] = data
    status = code if config.error_status == "mirror" else 200
    return web.json_response(body, status=status, reason=_REASONS.get(status))


@web.middleware
async def provider_edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate limit, faults and key for the API paths; each API request logged.

    Like a real server, the provider finishes what it was asked even when the client stops
    waiting: a generate whose caller was killed mid-request still makes its task (shielded
    from aiohttp's cancellation of the handler)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    return await asyncio.shield(_answer_logged(request, handler))


async def _answer_logged(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    received = state.clock()
    try:
        response, code = await _serve(request, handler, state), 200
    except ProviderError as exc:
        response, code = answer(state.config, exc.code, exc.msg), exc.code
    state.requests.append(
        {
            "time": received,
            "method": request.method,
            "endpoint": request.path,
            "taskId": request.query.get("taskId"),
            "status": response.status,
            "code": code,
        }
    )
    return response


async def _serve(request: web.Request, handler: Handler, state: SimState) -> web.StreamResponse:
    if not state.rate.admit():
        raise ProviderError(429, _FAULT_MSGS[429])
    fault, slow = state.draw_api_fault()
    try:
        if fault is not None:
            raise ProviderError(fault, _FAULT_MSGS[fault])
        expected = state.config.api_key
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProviderError(401, "unauthorized: send Authorization: Bearer <API key>")
        if expected is not None and token.strip() != expected:
            raise ProviderError(401, "unauthorized: the API key is not valid")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # no such route, method, or a body too large
            raise ProviderError(exc.status, exc.reason.lower()) from exc
    finally:
        if slow:  # a late answer to work already done: a slow generate has made its task
            await asyncio.sleep(state.faults.slow_seconds)


async def generate(request: web.Request) -> web.Response:
    """Create a MIDI task; it ends after its completion delay and then calls back."""
    payload = await _json_object(request)
    source = _text(payload, "taskId")
    callback_url = _text(payload, "callBackUrl")
    url = URL(callback_url, encoded=True)
    if url.scheme not in ("http", "https") or not url.host:
        raise ProviderError(400, "callBackUrl must be an http or https URL")
    audio_id = payload.get("audioId")
    if audio_id is not None and not isinstance(audio_id, str):
        raise ProviderError(400, "audioId must be a string")
    state = request.app[STATE]
    task = state.generate(source, callback_url, audio_id)
    jobs = request.app[JOBS]
    job = asyncio.create_task(run_task(state, request.app[SESSION], task))
    jobs.add(job)
    job.add_done_callback(jobs.discard)
    job.add_done_callback(_report_failure)
    return answer(state.config, 200, "success", {"taskId": task.task_id})


async def record_info(request: web.Request) -> web.Response:
    """A task's details: pending (``successFlag`` 0) until it ends, then its result."""
    state = request.app[STATE]
    task_id = request.query.get("taskId", "").strip()
    if not task_id:
        raise ProviderError(400, "taskId is required")
    task = state.tasks.get(task_id)
    if task is None:
        raise ProviderError(404, f"no task with taskId {task_id!r}")
    return answer(state.config, 200, "success", task.record_info())


def _report_failure(job: asyncio.Task[None]) -> None:
    """A bug in a task's run is logged, not lost with the task."""
    if not job.cancelled() and (exc := job.exception()) is not None:
        _log.error("task_run_failed", exc_info=exc)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json()
    except ValueError as exc:
        raise ProviderError(400, "the body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise ProviderError(400, "the body must be a JSON object")
    return payload


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ProviderError(400, f"{name} is required (a non-empty string)")
    return value
