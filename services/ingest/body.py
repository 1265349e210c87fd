"""Reading and parsing a callback body within limits: size, encoding, nesting, shape.

Everything here either returns a value or raises :class:`Refusal` with a 4xx answer; no
input makes it raise anything else. The depth check runs before ``json.loads`` and uses
no recursion, so a body of a million ``[`` costs a few C-speed passes, not a stack.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aiohttp import web

from services.common.callback import find_task_id
from services.common.keys import MAX_TASK_ID_LENGTH, is_valid_task_id

from .errors import Refusal

__all__ = ["json_depth_exceeds", "parse_callback", "read_body", "require_json"]

_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_EMPTY_PAIR: Final = re.compile(rb"\{\}|\[\]")
#: Every byte but the four brackets, to be deleted by ``bytes.translate``.
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def require_json(request: web.Request) -> None:
    """415 unless the request says ``application/json`` (UTF-8, when a charset is given)."""
    if request.content_type != "application/json":
        raise Refusal(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {request.content_type!r}",
            outcome="unsupported_media_type",
        )
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Refusal(
            415,
            "unsupported_media_type",
            f"the body must be UTF-8, got charset {charset!r}",
            outcome="unsupported_media_type",
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a
    chunked body is read only until it crosses the limit.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    if declared is not None and declared == 0:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        "body_too_large",
        f"the body exceeds the limit of {limit} bytes",
        outcome="too_large",
        headers={"Connection": "close"},
    )


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether the brackets of ``body`` (outside strings) nest deeper than ``max_depth``.

    Strings are cut out, every other byte but brackets is deleted, then each pass removes
    the innermost ``{}``/``[]`` pairs: the number of passes is the nesting depth. Only
    meaningful for well-formed JSON; for anything else the parser that runs next refuses it.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        shorter = _EMPTY_PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            return False  # unbalanced: not JSON, json.loads will say so
        brackets = shorter
    return bool(brackets)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_callback(body: bytes, *, max_depth: int) -> tuple[dict[str, Any], str]:
    """The JSON object and its task id, or a 400 saying what is wrong with the body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(
            400,
            "invalid_utf8",
            f"the body is not valid UTF-8 (byte {exc.start})",
            outcome="bad_request",
        ) from None
    if json_depth_exceeds(body, max_depth):
        raise Refusal(
            400,
            "too_deep",
            f"the JSON nests deeper than {max_depth} levels",
            outcome="bad_request",
        )
    try:
        payload = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise Refusal(
            400,
            "too_deep",
            f"the JSON nests deeper than {max_depth} levels",
            outcome="bad_request",
        ) from None
    except ValueError as exc:
        # JSONDecodeError, NaN/Infinity, integers past Python's digit limit.
        raise Refusal(
            400,
            "invalid_json",
            f"the body is not valid JSON: {_short(str(exc))}",
            outcome="bad_request",
        ) from None
    if not isinstance(payload, dict):
        raise Refusal(
            400,
            "not_an_object",
            f"the body must be a JSON object, got {type(payload).__name__}",
            outcome="bad_request",
        )
    task_id = find_task_id(payload)
    if task_id is None:
        raise Refusal(
            400,
            "missing_task_id",
            "no task id in task_id, taskId, data.taskId or data.task_id",
            outcome="bad_request",
        )
    if not is_valid_task_id(task_id):
        raise Refusal(
            400,
            "invalid_task_id",
            f"the task id must be 1-{MAX_TASK_ID_LENGTH} printable ASCII characters, no spaces",
            outcome="bad_request",
        )
    return payload, task_id


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
