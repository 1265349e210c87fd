"""The control API under ``/_sim/``: script tasks, set faults, read what really happened.

Not part of the provider: tests and demos use it to decide a task's fate before it is
submitted and to check what the client under test did (the request log, each callback
attempt). It has no authentication: the simulator is a development tool, never exposed.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final

from aiohttp import web

from .config import Faults, Script, SimConfigError, parse_callback_plan
from .keys import STATE
from .state import busiest_window

__all__ = ["CONTROL_PREFIX", "add_control_routes", "faults_from_json", "script_from_json"]

CONTROL_PREFIX: Final = "/_sim"

_FAULT_FIELDS: Final = frozenset(f.name for f in fields(Faults))


def add_control_routes(app: web.Application) -> None:
    app.router.add_get(f"{CONTROL_PREFIX}/health", health)
    app.router.add_get(f"{CONTROL_PREFIX}/tasks", list_tasks)
    app.router.add_get(f"{CONTROL_PREFIX}/tasks/{{task_id}}", show_task)
    app.router.add_get(f"{CONTROL_PREFIX}/tasks/{{task_id}}/callback", show_callback)
    app.router.add_get(f"{CONTROL_PREFIX}/requests", list_requests)
    app.router.add_get(f"{CONTROL_PREFIX}/scripts", list_scripts)
    app.router.add_put(f"{CONTROL_PREFIX}/scripts/{{source_task_id}}", put_script)
    app.router.add_get(f"{CONTROL_PREFIX}/faults", show_faults)
    app.router.add_put(f"{CONTROL_PREFIX}/faults", put_faults)


def _error(status: int, msg: str) -> web.Response:
    return web.json_response({"code": status, "msg": msg}, status=status)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_tasks(request: web.Request) -> web.Response:
    """Every task with its true outcome and each callback attempt, in creation order."""
    tasks = request.app[STATE].tasks.values()
    return web.json_response({"tasks": [task.describe() for task in tasks]})


async def show_task(request: web.Request) -> web.Response:
    task = request.app[STATE].tasks.get(request.match_info["task_id"])
    if task is None:
        return _error(404, "no such task")
    return web.json_response(task.describe())


async def show_callback(request: web.Request) -> web.Response:
    """The exact bytes the task's callbacks carry (dropped ones too): what a receiver must
    have kept, byte for byte. 409 while the task is still running."""
    task = request.app[STATE].tasks.get(request.match_info["task_id"])
    if task is None:
        return _error(404, "no such task")
    if task.callback_body is None:
        return _error(409, "the task has not ended: no callback body yet")
    return web.Response(body=task.callback_body, content_type="application/json")


async def list_requests(request: web.Request) -> web.Response:
    """The API request log (time, method, endpoint, taskId, HTTP status, body code), and
    the most requests received in any rate window."""
    state = request.app[STATE]
    window = state.config.rate_limit_window_seconds
    busiest = busiest_window([entry["time"] for entry in state.requests], window)
    return web.json_response(
        {
            "requests": list(state.requests),
            "busiestWindow": {"seconds": window, "requests": busiest},
        }
    )


async def list_scripts(request: web.Request) -> web.Response:
    scripts = request.app[STATE].scripts
    return web.json_response({source: describe_script(s) for source, s in scripts.items()})


async def put_script(request: web.Request) -> web.Response:
    """Script every task generated from this source task id from now on."""
    try:
        script = script_from_json(await request.json())
    except (ValueError, SimConfigError) as exc:
        return _error(400, str(exc))
    request.app[STATE].scripts[request.match_info["source_task_id"]] = script
    return web.json_response(describe_script(script))


async def show_faults(request: web.Request) -> web.Response:
    return web.json_response(describe_faults(request.app[STATE].faults))


async def put_faults(request: web.Request) -> web.Response:
    """Replace the global fault ratios; fields left out take their defaults (no fault)."""
    try:
        faults = faults_from_json(await request.json())
    except (ValueError, SimConfigError) as exc:
        return _error(400, str(exc))
    request.app[STATE].faults = faults
    return web.json_response(describe_faults(faults))


def describe_script(script: Script) -> dict[str, Any]:
    return {
        "outcome": script.outcome,
        "callback": str(script.callback),
        "shape": script.shape,
        "completion_seconds": script.completion_seconds,
    }


def script_from_json(payload: Any) -> Script:
    """``{"outcome", "callback": "deliver|drop|twice|delay:<s>", "shape",
    "completion_seconds"}``, each optional."""
    if not isinstance(payload, dict):
        raise SimConfigError("a script is a JSON object")
    unknown = set(payload) - {"outcome", "callback", "shape", "completion_seconds"}
    if unknown:
        raise SimConfigError(f"unknown script fields: {', '.join(sorted(unknown))}")
    callback = payload.get("callback", "deliver")
    if not isinstance(callback, str):
        raise SimConfigError("callback must be a string: deliver, drop, twice, delay:<seconds>")
    return Script(
        outcome=payload.get("outcome", "success"),
        callback=parse_callback_plan(callback),
        shape=payload.get("shape"),
        completion_seconds=payload.get("completion_seconds"),
    )


def describe_faults(faults: Faults) -> dict[str, Any]:
    described = {name: getattr(faults, name) for name in sorted(_FAULT_FIELDS - {"api"})}
    described["api"] = {str(code): ratio for code, ratio in sorted(faults.api.items())}
    return described


def faults_from_json(payload: Any) -> Faults:
    """``{"drop": 0.1, "api": {"429": 0.2}, ...}``: the fields of :class:`Faults`."""
    if not isinstance(payload, dict):
        raise SimConfigError("faults are a JSON object")
    unknown = set(payload) - _FAULT_FIELDS
    if unknown:
        raise SimConfigError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    values = dict(payload)
    for name, value in values.items():
        if name != "api" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SimConfigError(f"{name} must be a number, not {value!r}")
    api = values.pop("api", {})
    if not isinstance(api, dict):
        raise SimConfigError('api is an object of code to ratio, e.g. {"429": 0.1}')
    try:
        codes = {int(code): ratio for code, ratio in api.items()}
    except ValueError as exc:
        raise SimConfigError(f"api fault codes are numbers: {exc}") from exc
    return Faults(api=codes, **values)
