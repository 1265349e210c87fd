"""Reading the provider's callback JSON: the facts every service needs from it.

The provider has documented the task id in four places (FACTS.md); all are accepted,
first match wins in the order below. The rules for one value (what counts as a code, a
text, a task id, which operation sent it) are functions of their own, so a reader that
does not hold the callback as a dict (the ingest's fields-only parser) applies the very
same rules.

One account-wide HMAC key signs every operation's callbacks, and users point several
operations at one callback URL, so a callback is classified by kind (:func:`kind_of`)
before anything treats it as MIDI.

A body may also be the provider's ``record-info`` answer, which the tracker fetches for a
task whose callback never came and sends down the pipeline as it is. Its result sits in
``data.midiData`` and its outcome in ``data.successFlag`` (the top-level ``code`` only says
the query worked), so :func:`callback_code`, :func:`callback_state` and
:func:`result_data` read a callback and a ``record-info`` answer alike.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final, Literal, get_args

__all__ = [
    "CALLBACK_KINDS",
    "KIND_MARKERS",
    "TASK_ID_PATHS",
    "CallbackKind",
    "as_code",
    "as_text",
    "callback_code",
    "callback_kind",
    "callback_msg",
    "callback_state",
    "find_task_id",
    "first_task_id",
    "is_record_info",
    "kind_of",
    "result_data",
    "well_formed",
]

#: ASCII digits only: str.isdigit() accepts "²", which int() refuses; ten digits at most,
#: so int() never meets its 4300-digit limit.
_INT32_TEXT = re.compile(r"\s*-?[0-9]{1,10}\s*", re.ASCII)

TASK_ID_PATHS: tuple[tuple[str, ...], ...] = (
    ("task_id",),
    ("taskId",),
    ("data", "taskId"),
    ("data", "task_id"),
)


#: ``midi``: this project's operation; ``music_generation``: the generate family
#: (``data.callbackType``, tracks in ``data.data``); ``separation``: vocal/stem separation
#: (``data.vocal_removal_info``); ``unknown``: none of them, or markers of several.
CallbackKind = Literal["midi", "music_generation", "separation", "unknown"]
CALLBACK_KINDS: Final[tuple[CallbackKind, ...]] = get_args(CallbackKind)

#: The members of ``data`` that tell the operations apart, by the kind each one marks.
KIND_MARKERS: Final[Mapping[str, CallbackKind]] = {
    "instruments": "midi",
    "state": "midi",
    "callbackType": "music_generation",
    "data": "music_generation",
    "vocal_removal_info": "separation",
    "midiData": "midi",  # a record-info answer of this operation
}

#: record-info's ``successFlag`` for a finished task -> the callback code it stands for
#: (1 success; 2 task creation failed, 3 generation failed). 0 (pending) is no result yet.
_FLAG_CODES: Final[Mapping[int, int]] = {1: 200, 2: 500, 3: 500}


def kind_of(data_members: Collection[str], code: int | None) -> CallbackKind:
    """The operation that sent a callback, from the members its ``data`` has (any value,
    ``null`` included) and its ``code``.

    Each kind is recognised by its own markers (:data:`KIND_MARKERS`): a MIDI callback by
    ``instruments`` or ``state``, or, having no kind's markers at all, by a failure code
    (the provider's MIDI failures carry nothing else). Markers of two kinds, or none and a
    success or missing code, make ``unknown``: no file is made from a guess.
    """
    kinds = {KIND_MARKERS[member] for member in data_members if member in KIND_MARKERS}
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds and code is not None and code != 200:
        return "midi"
    return "unknown"


def first_task_id(candidates: Iterable[object]) -> str | None:
    """The first non-empty string among ``candidates`` (in :data:`TASK_ID_PATHS` order)."""
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def as_code(value: object) -> int | None:
    """``value`` as a 32-bit int when it is one (or an integral numeric string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**31) <= value < 2**31 else None
    if isinstance(value, str) and _INT32_TEXT.fullmatch(value):
        number = int(value)
        return number if -(2**31) <= number < 2**31 else None
    return None


def as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def find_task_id(payload: Mapping[str, Any]) -> str | None:
    """The first non-empty string task id among :data:`TASK_ID_PATHS`, else ``None``."""
    return first_task_id(_at(payload, path) for path in TASK_ID_PATHS)


def is_record_info(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a ``record-info`` answer (its ``data`` has ``successFlag``)."""
    data = payload.get("data")
    return isinstance(data, Mapping) and "successFlag" in data


def callback_code(payload: Mapping[str, Any]) -> int | None:
    """``code`` as an int when it is one (or an integral numeric string). For a
    ``record-info`` answer, the code its ``successFlag`` stands for: 200 for a success, its
    ``errorCode`` (else 500) for a failure, ``None`` while pending."""
    if not is_record_info(payload):
        return as_code(payload.get("code"))
    data = payload["data"]
    code = _FLAG_CODES.get(as_code(data.get("successFlag")) or 0)
    if code is None or code == 200:
        return code
    error = as_code(data.get("errorCode"))
    return error if error is not None and error != 200 else code


def callback_msg(payload: Mapping[str, Any]) -> str | None:
    if is_record_info(payload):
        error = as_text(payload["data"].get("errorMessage"))
        if error is not None:
            return error
    return as_text(payload.get("msg"))


def callback_kind(payload: Mapping[str, Any]) -> CallbackKind:
    """The operation that sent ``payload`` (see :func:`kind_of`)."""
    data = payload.get("data")
    members = data.keys() & KIND_MARKERS.keys() if isinstance(data, Mapping) else set()
    return kind_of(members, callback_code(payload))


def result_data(payload: Mapping[str, Any]) -> object:
    """Where the result (``state``, ``instruments``) is: ``data``, or a ``record-info``
    answer's ``data.midiData``."""
    data = payload.get("data")
    return data.get("midiData") if is_record_info(payload) else data  # type: ignore[union-attr]


def callback_state(payload: Mapping[str, Any]) -> str | None:
    result = result_data(payload)
    return as_text(result.get("state")) if isinstance(result, Mapping) else None


def _at(payload: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = payload
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


#: The code points a Python str can hold that no UTF-8 encoder takes (JSON "\\ud800").
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (REPLACEMENT CHARACTER).

    Lone surrogates are the only code points a Python str holds that UTF-8 cannot: after
    this, every name and message an event or a MIDI file carries encodes. A valid pair
    (``"\\ud83d\\ude00"``) is one character in a str and is kept.
    """
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)
