"""Reading the archive back: which callbacks it holds, filtered, and their exact bytes.

The list, export and replay commands all start here. An entry is a body (``<sha>.json``)
with its sidecar; a sidecar whose body is missing is an archive write cut short (the
record was not committed, so it will be archived again) and is not an entry.

Nothing read back is trusted: a sidecar must be a well-formed version-1 document naming
the task of its folder and the body of its file name, and a body must hash to its name and
carry the task id its entry claims (:func:`read_body`). An entry that fails is a
:class:`BadEntry` naming the object and what is wrong, so one edited or damaged file is
reported and skipped instead of replayed as another task or crashing a listing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from services.common.callback import callback_code, callback_msg, callback_state, find_task_id
from services.common.errors import CorruptArchiveError, ObjectNotFoundError, StorageError
from services.common.events import DeliverySource
from services.common.keys import task_key
from services.common.storage import Storage

from .archive import RAW_PREFIX, SIDECAR_VERSION

# CorruptArchiveError lives in services.common.errors; named here too, where it is raised.
__all__ = ["ArchiveEntry", "BadEntry", "CorruptArchiveError", "Filters", "read_body", "scan"]

_BODY_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})\.json")

#: The sidecar fields an entry is built from, and the JSON types each may have.
_SIDECAR_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "task_id": (str,),
    "body_sha256": (str,),
    "size_bytes": (int,),
    "received_at": (str,),
    "code": (int, type(None)),
    "msg": (str, type(None)),
    "state": (str, type(None)),
    "signature": (str,),
    "headers": (dict,),
}
_SIGNATURES = ("VERIFIED", "UNVERIFIED")


@dataclass(frozen=True)
class Filters:
    """What to select; ``since`` is inclusive, ``until`` exclusive (received time, UTC)."""

    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    code: int | None = None

    def prefix(self) -> str:
        if self.task_id is None:
            return RAW_PREFIX
        return f"{RAW_PREFIX}{task_key(self.task_id)}/"

    def matches(self, entry: ArchiveEntry) -> bool:
        if self.task_id is not None and entry.task_id != self.task_id:
            return False
        if self.code is not None and entry.code != self.code:
            return False
        if self.since is not None or self.until is not None:
            if entry.received_at is None:
                return False
            if self.since is not None and entry.received_at < self.since:
                return False
            if self.until is not None and entry.received_at >= self.until:
                return False
        return True


@dataclass(frozen=True)
class BadEntry:
    """An archived object that cannot be used: where it is, and what is wrong with it."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(frozen=True)
class ArchiveEntry:
    """One archived callback, as its sidecar describes it."""

    task_id: str
    body_sha256: str
    body_key: str
    size_bytes: int
    received_at: datetime | None
    code: int | None
    msg: str | None
    state: str | None
    signature: str
    headers: dict[str, str] = field(default_factory=dict)
    #: Absent from sidecars written before polling existed: those were all callbacks.
    source: DeliverySource = "CALLBACK"
    request_id: str | None = None

    def summary(self) -> dict[str, Any]:
        """The entry as plain JSON values (``list --json``)."""
        return {
            "task_id": self.task_id,
            "received_at": None if self.received_at is None else self.received_at.isoformat(),
            "code": self.code,
            "state": self.state,
            "size_bytes": self.size_bytes,
            "body_sha256": self.body_sha256,
            "key": self.body_key,
        }

    def sort_key(self) -> tuple[datetime, str, str]:
        return (
            self.received_at or datetime.min.replace(tzinfo=UTC),
            self.task_id,
            self.body_sha256,
        )


async def scan(
    storage: Storage, filters: Filters | None = None
) -> AsyncIterator[ArchiveEntry | BadEntry]:
    """Every archived callback matching ``filters``, in key order, and every entry below
    the filters' prefix whose sidecar cannot be trusted (a :class:`BadEntry`)."""
    filters = filters or Filters()
    async for key in storage.list(filters.prefix()):
        parts = key.split("/")
        if len(parts) != 3:
            continue
        match = _BODY_NAME.fullmatch(parts[2])
        if match is None:
            continue
        entry = await _entry(storage, key, parts[1], match["sha"])
        if isinstance(entry, BadEntry) or filters.matches(entry):
            yield entry


async def read_body(storage: Storage, entry: ArchiveEntry) -> bytes:
    """The archived bytes, checked against the hash in their name and the entry's task id.

    Raises :class:`CorruptArchiveError` when they do not match, :class:`StorageError` when
    the body cannot be read.
    """
    where = storage.uri(entry.body_key)
    body = await storage.get(entry.body_key)
    if hashlib.sha256(body).hexdigest() != entry.body_sha256:
        raise CorruptArchiveError(f"{where} does not hash to its name; the archive is damaged")
    found = _body_task_id(body)
    if found != entry.task_id:
        names = "no task id" if found is None else f"task {found!r}"
        raise CorruptArchiveError(
            f"{where} is filed as task {entry.task_id!r} but the body names {names}; "
            "the archive is damaged or was edited"
        )
    return body


def _body_task_id(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return find_task_id(payload) if isinstance(payload, dict) else None


async def _entry(storage: Storage, body_key: str, folder: str, sha: str) -> ArchiveEntry | BadEntry:
    meta_key = body_key[: -len(".json")] + ".meta.json"
    try:
        raw = await storage.get(meta_key)
    except ObjectNotFoundError:
        return await _entry_without_sidecar(storage, body_key, folder, sha)
    except StorageError as exc:
        return BadEntry(storage.uri(meta_key), f"unreadable sidecar ({exc})")
    try:
        return _from_sidecar(_parse_sidecar(raw), body_key, folder, sha)
    except ValueError as exc:
        return BadEntry(storage.uri(meta_key), str(exc))


def _parse_sidecar(raw: bytes) -> dict[str, Any]:
    """The sidecar's fields, each of its documented type; ``ValueError`` says what is not."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise ValueError("the sidecar is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the sidecar is not a JSON object")
    for name, types in _SIDECAR_FIELDS.items():
        if name not in document:
            raise ValueError(f"the sidecar has no {name!r} field")
        value = document[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"the sidecar's {name!r} is {value!r}, not {wanted}")
    if document["version"] != SIDECAR_VERSION:
        raise ValueError(f"the sidecar's version {document['version']} is not supported")
    if document["signature"] not in _SIGNATURES:
        raise ValueError(f"the sidecar's 'signature' is {document['signature']!r}")
    headers = document["headers"]
    if not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("the sidecar's 'headers' are not all strings")
    if _parse_time(document["received_at"]) is None:
        raise ValueError(f"the sidecar's 'received_at' {document['received_at']!r} is no time")
    return document


def _from_sidecar(document: dict[str, Any], body_key: str, folder: str, sha: str) -> ArchiveEntry:
    """The entry a well-formed sidecar describes, if it describes the body beside it."""
    task_id: str = document["task_id"]
    if task_key(task_id) != folder:
        raise ValueError(
            f"the sidecar names task {task_id!r} but is filed under task {unquote(folder)!r}"
        )
    if document["body_sha256"] != sha:
        raise ValueError(
            f"the sidecar describes body {str(document['body_sha256'])[:16]}..., "
            f"not the body {sha[:16]}... beside it"
        )
    return ArchiveEntry(
        task_id=task_id,
        body_sha256=sha,
        body_key=body_key,
        size_bytes=document["size_bytes"],
        received_at=_parse_time(document["received_at"]),
        code=document["code"],
        msg=document["msg"],
        state=document["state"],
        signature=document["signature"],
        headers=dict(document["headers"]),
        source="POLL" if document.get("source") == "POLL" else "CALLBACK",
        request_id=request_id
        if isinstance(request_id := document.get("request_id"), str)
        else None,
    )


async def _entry_without_sidecar(
    storage: Storage, body_key: str, folder: str, sha: str
) -> ArchiveEntry | BadEntry:
    """A body whose sidecar is missing: what the body itself says, no received time."""
    try:
        body = await storage.get(body_key)
    except StorageError as exc:
        return BadEntry(storage.uri(body_key), f"unreadable body without a sidecar ({exc})")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    payload = payload if isinstance(payload, dict) else {}
    return ArchiveEntry(
        task_id=unquote(folder),
        body_sha256=sha,
        body_key=body_key,
        size_bytes=len(body),
        received_at=None,
        code=callback_code(payload),
        msg=callback_msg(payload),
        state=callback_state(payload),
        signature="UNVERIFIED",
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
