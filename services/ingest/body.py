"""Reading and parsing a callback body within limits: size, encoding, nesting, shape.

Everything here either returns a value or raises :class:`Refusal` with a 4xx answer; no
input makes it raise anything else. The depth check runs before parsing and uses no
recursion, so a body of a million ``[`` costs a few C-speed passes, not a stack.

Parsing was the hot path's largest cost, most of it building (and then freeing) a Python
object for every note of a body whose notes the ingest never reads. So there are three
parsers, tried in turn, each deciding only what the previous one could not:

1. **msgspec**, decoding into a struct of the fields the ingest reads (task id in its four
   places, code, msg, data.state): it checks the whole document's syntax but builds
   nothing else (10 KB: ~4 us instead of ~40 us). It does not check UTF-8 inside strings it
   skips, nor Python's 4300-digit integer limit, so both are checked before it (cheaply:
   ``isascii`` and one ``translate``); anything it refuses goes on.
2. **orjson**, building the whole object (whatever msgspec refused for its *shape*, e.g. a
   ``data`` that is not an object, still gets its exact answer).
3. **json.loads**, which decides (and words) every 400.

Each accepts a subset of what the next accepts, with equal values for the fields read,
except integers past 64 bits (floats in orjson), which no field the ingest reads (task id,
code, msg, state) can hold as a valid value; a differential property test checks the chain
against ``json.loads`` alone. Whichever parser decided, the answer is one
:class:`ParsedCallback`, read with the rules of :mod:`services.common.callback`; nothing
after this module looks at the JSON again.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson
from aiohttp import web

from services.common.callback import (
    KIND_MARKERS,
    TASK_ID_PATHS,
    CallbackKind,
    as_code,
    as_text,
    callback_code,
    callback_kind,
    callback_msg,
    callback_state,
    find_task_id,
    first_task_id,
    kind_of,
)
from services.common.keys import TASK_ID_RULE, is_valid_task_id
from services.common.settings import COPIES_WHILE_PUBLISHED

from .budget import Hold
from .errors import Refusal

__all__ = ["ParsedCallback", "json_depth_exceeds", "parse_callback", "read_body", "require_json"]

#: Every byte but quotes and the four brackets, to be deleted by ``bytes.translate``.
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'"[]{}')
#: Objects nest like arrays: ``{}`` becomes ``[]`` so one ``replace`` peels both kinds.
_ONE_BRACKET_KIND: Final = bytes.maketrans(b"{}", b"[]")

#: Python refuses to parse integers with more digits than this (0: no limit); json.loads
#: therefore refuses such a body, and the processor would too.
_MAX_INT_DIGITS: Final = sys.get_int_max_str_digits()
#: Digits become "0", everything else a space: a run of too many digits is then a substring.
_DIGITS_AS_ZEROS: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_TOO_MANY_DIGITS: Final = b"0" * (_MAX_INT_DIGITS + 1)


class _DataFields(msgspec.Struct):
    """The members of ``data`` the ingest reads; msgspec checks and skips the rest.

    The other kind markers are only looked at for presence: ``Raw`` keeps a view of their
    bytes, so the notes under ``instruments`` are never built.
    """

    taskId: Any = msgspec.UNSET
    task_id: Any = msgspec.UNSET
    state: Any = msgspec.UNSET
    instruments: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    callbackType: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    vocal_removal_info: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    midiData: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    #: A record-info answer: its code and state are not where a callback has them, so the
    #: whole-document parser, which reads both shapes (services.common.callback), decides.
    successFlag: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _ReadFields(msgspec.Struct):
    """The members of a callback the ingest reads; a ``data`` of another type -> next parser."""

    task_id: Any = msgspec.UNSET
    taskId: Any = msgspec.UNSET
    code: Any = msgspec.UNSET
    msg: Any = msgspec.UNSET
    data: _DataFields | msgspec.UnsetType | None = msgspec.UNSET


_READ_FIELDS: Final = msgspec.json.Decoder(_ReadFields)


@dataclass(frozen=True, slots=True)
class ParsedCallback:
    """Everything the ingest takes from a callback's JSON, read once by the parser.

    ``msg`` and ``state`` are as the JSON gave them (a lone surrogate included): making
    them valid UTF-8 is the event's business.
    """

    task_id: str
    code: int | None
    msg: str | None
    state: str | None
    kind: CallbackKind


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


async def read_body(request: web.Request, limit: int, within: float, hold: Hold) -> bytearray:
    """The whole body in one buffer, counted in ``hold`` before it is read; 413 as soon as
    it is known to exceed ``limit`` bytes, 503 when the ingest's buffer budget is spent.

    A declared ``Content-Length`` is counted (or refused) before anything is read, for
    every copy publishing will make, and the body is read into one buffer of that size:
    no list of chunks, no joined copy. A chunked body is counted chunk by chunk and read
    only until it crosses the limit. A body that has not fully arrived after ``within``
    seconds gets 408 (a stalled or trickling upload would otherwise hold its connection and
    handler for as long as the sender likes).
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    if declared is not None:
        hold.add(COPIES_WHILE_PUBLISHED * declared)
    buffer = bytearray(declared or 0)
    size = 0
    try:
        async with asyncio.timeout(within):
            while declared != 0:
                chunk = await request.content.readany()
                if not chunk:
                    break
                end = size + len(chunk)
                if end > limit:
                    raise _too_large(limit)
                if declared is None:
                    hold.add(len(chunk))
                    buffer += chunk
                else:
                    buffer[size:end] = chunk
                size = end
    except TimeoutError:
        raise Refusal(
            408,
            "body_timeout",
            f"the body did not arrive within {within:g} s",
            outcome="incomplete_body",
            headers={"Connection": "close"},
        ) from None
    except ConnectionResetError:
        # The sender hung up mid-body (aiohttp fails the read with this): nobody will read
        # an answer, but the request is counted and logged like any other refusal.
        raise Refusal(
            400,
            "incomplete_body",
            "the connection closed before the whole body arrived",
            outcome="incomplete_body",
        ) from None
    if size < len(buffer):
        del buffer[size:]  # not reached with aiohttp, which enforces Content-Length
    return buffer


def _too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        "body_too_large",
        f"the body exceeds the limit of {limit} bytes",
        outcome="too_large",
        headers={"Connection": "close"},
    )


def json_depth_exceeds(body: bytes | bytearray, max_depth: int) -> bool:
    """Whether the brackets of ``body`` (outside strings) nest deeper than ``max_depth``.

    All at C speed, no regular expression: escaped backslashes and quotes are dropped, every
    byte but quotes and brackets is deleted (objects mapped onto arrays), strings are cut
    out, then each pass removes the innermost ``[]`` pairs: the number of passes is the
    depth. ``max_depth + 1`` opening brackets in a row (strings removed) end it at once, so
    a million ``[`` costs milliseconds. Only meaningful for well-formed JSON; for anything
    else the parser that runs next refuses it (a malformed body that opens more than
    ``max_depth`` levels in a row is "too deep" either way).
    """
    if b"\\" in body:
        # Backslashes occur only inside strings; pairs go first (a run of them pairs from
        # the left), then escaped quotes: every quote left delimits a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(_ONE_BRACKET_KIND, _NOT_STRUCTURE)
    if len(structure) - structure.count(b'"') <= max_depth:
        return False  # too few brackets to nest that deep, wherever they are
    # Adjacent quotes can go in pairs without disturbing which of the others open a string.
    brackets = structure.replace(b'""', b"")
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


def parse_callback(body: bytes | bytearray, *, max_depth: int) -> ParsedCallback:
    """The fields the ingest reads, or a 400 saying what is wrong."""
    too_deep = json_depth_exceeds(body, max_depth)
    if not too_deep:
        read = _read_fields(body)
        if read is not None:
            return _from_struct(read)
        try:
            payload = orjson.loads(body)  # validates UTF-8 too
        except orjson.JSONDecodeError:
            pass  # whatever orjson refuses, the standard library below decides and explains
        else:
            return _from_payload(payload)
    return _from_payload(_parse_slowly(body, too_deep=too_deep, max_depth=max_depth))


def _read_fields(body: bytes | bytearray) -> _ReadFields | None:
    """The read fields, or ``None`` when the next parser must decide."""
    if not body.isascii():
        try:
            body.decode("utf-8")  # msgspec skips strings without checking their UTF-8
        except UnicodeDecodeError:
            return None
    if (
        _MAX_INT_DIGITS
        and len(body) > _MAX_INT_DIGITS
        and _TOO_MANY_DIGITS in body.translate(_DIGITS_AS_ZEROS)
    ):
        return None  # maybe an integer json.loads refuses: the next parsers decide
    try:
        read = _READ_FIELDS.decode(body)
    except msgspec.DecodeError:  # ValidationError (another shape) is one too
        return None
    if isinstance(read.data, _DataFields) and read.data.successFlag is not msgspec.UNSET:
        return None
    return read


def _from_struct(read: _ReadFields) -> ParsedCallback:
    data = read.data if isinstance(read.data, _DataFields) else None
    code = as_code(read.code)
    members = [m for m in KIND_MARKERS if getattr(data, m, msgspec.UNSET) is not msgspec.UNSET]
    return _accepted(
        first_task_id(_member(read, path) for path in TASK_ID_PATHS),
        code=code,
        msg=as_text(read.msg),
        state=None if data is None else as_text(data.state),
        kind=kind_of(members, code),
    )


def _member(read: _ReadFields, path: tuple[str, ...]) -> object:
    """The member at ``path`` (unset: ``UNSET``, which is no task id)."""
    node: object = read
    for part in path:
        node = getattr(node, part, None) if isinstance(node, msgspec.Struct) else None
    return node


def _from_payload(payload: object) -> ParsedCallback:
    """The fields of a whole parsed document (the path of whatever msgspec refused)."""
    if not isinstance(payload, dict):
        raise Refusal(
            400,
            "not_an_object",
            f"the body must be a JSON object, got {type(payload).__name__}",
            outcome="bad_request",
        )
    return _accepted(
        find_task_id(payload),
        code=callback_code(payload),
        msg=callback_msg(payload),
        state=callback_state(payload),
        kind=callback_kind(payload),
    )


def _accepted(
    task_id: str | None,
    *,
    code: int | None,
    msg: str | None,
    state: str | None,
    kind: CallbackKind,
) -> ParsedCallback:
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
            TASK_ID_RULE,
            outcome="bad_request",
        )
    return ParsedCallback(task_id, code, msg, state, kind)


def _parse_slowly(body: bytes | bytearray, *, too_deep: bool, max_depth: int) -> Any:
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
