"""Reading the provider's callback JSON: the facts every service needs from it.

The provider has documented the task id in four places (FACTS.md); all are accepted,
first match wins in the order below. The rules for one value (what counts as a code, a
text, a task id) are functions of their own, so a reader that does not hold the callback
as a dict (the ingest's fields-only parser) applies the very same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "TASK_ID_PATHS",
    "as_code",
    "as_text",
    "callback_code",
    "callback_msg",
    "callback_state",
    "find_task_id",
    "first_task_id",
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


def callback_code(payload: Mapping[str, Any]) -> int | None:
    """``code`` as an int when it is one (or an integral numeric string)."""
    return as_code(payload.get("code"))


def callback_msg(payload: Mapping[str, Any]) -> str | None:
    return as_text(payload.get("msg"))


def callback_state(payload: Mapping[str, Any]) -> str | None:
    return as_text(_at(payload, ("data", "state")))


def _at(payload: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = payload
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
