"""Which task and request ids we accept, and turning task ids into storage keys that can
never name a path outside their folder."""

from __future__ import annotations

import re

__all__ = [
    "MAX_TASK_ID_LENGTH",
    "REQUEST_ID_PARAM",
    "REQUEST_ID_RULE",
    "TASK_ID_RULE",
    "is_valid_request_id",
    "is_valid_task_id",
    "task_key",
]

#: Longest task id accepted. Encoded, the worst case is three bytes a character, and
#: ``<key>.mid`` must stay below the usual 255-byte file-name limit.
MAX_TASK_ID_LENGTH = 80

#: What :func:`is_valid_task_id` accepts, in words: the message wherever an id is refused.
TASK_ID_RULE = f"the task id must be 1-{MAX_TASK_ID_LENGTH} printable ASCII characters, no spaces"

#: The callback URL's query parameter naming our request (the tracker sets it, the ingest
#: copies it into the event), so a task whose submission outcome was unknown finds its
#: request when its callback arrives.
REQUEST_ID_PARAM = "request_id"
#: What :func:`is_valid_request_id` accepts, in words.
REQUEST_ID_RULE = "a request id must be 1-128 characters: ASCII letters, digits, '.', '_', ':', '-'"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


def task_key(task_id: str) -> str:
    """Percent-encode every byte of ``task_id`` except ASCII letters, digits, ``-`` and ``_``.

    ``urllib.parse.quote(task_id, safe="-_")`` would leave ``.`` and ``~`` as they are, so a
    task id of ``..`` would name the parent folder; here they are encoded too.
    """
    return "".join(
        chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in task_id.encode("utf-8")
    )


def is_valid_task_id(task_id: str) -> bool:
    """:data:`TASK_ID_RULE`: the ids the ingest accepts, and the only ones a consumer names
    a file after (any other is dead-lettered)."""
    return (
        0 < len(task_id) <= MAX_TASK_ID_LENGTH and _PRINTABLE_ASCII.fullmatch(task_id) is not None
    )


def is_valid_request_id(request_id: str) -> bool:
    """:data:`REQUEST_ID_RULE`: safe in a URL's query string and a log line as it is."""
    return _REQUEST_ID.fullmatch(request_id) is not None
