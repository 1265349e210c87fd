"""Reading and parsing a callback body within limits: size, encoding, nesting, shape.

Everything here either returns a value or raises :class:`Refusal` with a 4xx answer; no
input makes it raise anything else. The depth check runs before parsing and uses no
recursion, so a body of a million ``[`` costs a few C-speed passes, not a stack.

Parsing is the hot path's largest cost, so a body is parsed by orjson (about 3x faster than
``json.loads``); whatever orjson refuses goes through the standard library, which decides
(and words) every 400 exactly as before. orjson accepts a subset of what ``json.loads``
accepts, with the same values except integers past 64 bits (floats in orjson), which no
field the ingest reads (task id, code, msg, state) can hold as a valid value.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

import orjson
from aiohttp import web

from services.common.callback import find_task_id
from services.common.keys import MAX_TASK_ID_LENGTH, is_valid_task_id

from .errors import Refusal

__all__ = ["json_depth_exceeds", "parse_callback", "read_body", "require_json"]

#: Every byte but quotes and the four brackets, to be deleted by ``bytes.translate``.
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'"[]{}')
#: Objects nest like arrays: ``{}`` becomes ``[]`` so one ``replace`` peels both kinds.
_ONE_BRACKET_KIND: Final = bytes.maketrans(b"{}", b"[]")
#: "orjson did not parse it" (``None`` is a JSON value).
_UNPARSED: Final = object()


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

    All at C speed, no regular expression: escaped backslashes and quotes are dropped, every
    byte but quotes and brackets is deleted (objects mapped onto arrays), strings are cut
    out, then each pass removes the innermost ``[]`` pairs: the number of passes is the
    depth. ``max_depth + 1`` opening brackets in a row (strings removed) end it at once, so
    a million ``[`` costs milliseconds. Only meaningful for well-formed JSON; for anything
    else the parser that runs next refuses it (a malformed body that opens more than
    ``max_depth`` levels in a row is "too deep" either way).
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    if b"\\" in body:
        # Backslashes occur only inside strings; pairs go first (a run of them pairs from
        # the left), then escaped quotes: every quote left delimits a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Adjacent quotes can go in pairs without disturbing which of the others open a string.
    brackets = body.translate(_ONE_BRACKET_KIND, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        # Strings with brackets inside: keep what lies between them (even pieces).
        brackets = b"".join(brackets.split(b'"')[::2])
    too_many_opens = b"[" * (max_depth + 1)
    for _ in range(max_depth):
        if not brackets:
            return False
        if too_many_opens in brackets:
            return True
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False  # unbalanced: not JSON, the parser will say so
        brackets = shorter
    return bool(brackets)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_callback(body: bytes, *, max_depth: int) -> tuple[dict[str, Any], str]:
    """The JSON object and its task id, or a 400 saying what is wrong with the body."""
    too_deep = json_depth_exceeds(body, max_depth)
    payload: Any = _UNPARSED
    if not too_deep:
        # Whatever orjson refuses, the standard library below decides and explains.
        with contextlib.suppress(orjson.JSONDecodeError):
            payload = orjson.loads(body)  # validates UTF-8 too
    if payload is _UNPARSED:
        payload = _parse_slowly(body, too_deep=too_deep, max_depth=max_depth)
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


def _parse_slowly(body: bytes, *, too_deep: bool, max_depth: int) -> Any:
    """``json.loads`` with every refusal worded: the path of whatever orjson refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(
            400,
            "invalid_utf8",
            f"the body is not valid UTF-8 (byte {exc.start})",
            outcome="bad_request",
        ) from None
    if too_deep:
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
    return payload


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
