"""Reading the provider's callback JSON: the facts every service needs from it.

The provider has documented the task id in four places (FACTS.md); all are accepted,
first match wins in the order below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["TASK_ID_PATHS", "callback_code", "callback_msg", "callback_state", "find_task_id"]

#: ASCII digits only: str.isdigit() accepts "²", which int() refuses; ten digits at most,
#: so int() never meets its 4300-digit limit.
_INT32_TEXT = re.compile(r"\s*-?[0-9]{1,10}\s*", re.ASCII)

TASK_ID_PATHS: tuple[tuple[str, ...], ...] = (
    ("task_id",),
    ("taskId",),
    ("data", "taskId"),
    ("data", "task_id"),
)


def find_task_id(payload: Mapping[str, Any]) -> str | None:
    """The first non-empty string task id among :data:`TASK_ID_PATHS`, else ``None``."""
    for path in TASK_ID_PATHS:
        node: Any = payload
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, str) and node:
            return node
    return None


def callback_code(payload: Mapping[str, Any]) -> int | None:
    """``code`` as an int when it is one (or an integral numeric string)."""
    code = payload.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if -(2**31) <= code < 2**31 else None
    if isinstance(code, str) and _INT32_TEXT.fullmatch(code):
        value = int(code)
        return value if -(2**31) <= value < 2**31 else None
    return None


def callback_msg(payload: Mapping[str, Any]) -> str | None:
    msg = payload.get("msg")
    return msg if isinstance(msg, str) else None


def callback_state(payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data")
    if isinstance(data, Mapping):
        state = data.get("state")
        if isinstance(state, str):
            return state
    return None
