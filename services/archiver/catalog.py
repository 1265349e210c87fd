"""Reading the archive back: which callbacks it holds, filtered, and their exact bytes.

The list, export and replay commands all start here. An entry is a body (``<sha>.json``)
with its sidecar; a sidecar whose body is missing is an archive write cut short (the
record was not committed, so it will be archived again) and is not an entry.
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

from services.common.callback import callback_code, callback_msg, callback_state
from services.common.errors import CorruptArchiveError, ObjectNotFoundError
from services.common.keys import task_key
from services.common.storage import Storage

from .archive import RAW_PREFIX

# CorruptArchiveError lives in services.common.errors; named here too, where it is raised.
__all__ = ["ArchiveEntry", "CorruptArchiveError", "Filters", "read_body", "scan"]

_BODY_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})\.json")


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


async def scan(storage: Storage, filters: Filters | None = None) -> AsyncIterator[ArchiveEntry]:
    """Every archived callback matching ``filters``, in key order."""
    filters = filters or Filters()
    async for key in storage.list(filters.prefix()):
        parts = key.split("/")
        if len(parts) != 3:
            continue
        match = _BODY_NAME.fullmatch(parts[2])
        if match is None:
            continue
        entry = await _entry(storage, key, parts[1], match["sha"])
        if filters.matches(entry):
            yield entry


async def read_body(storage: Storage, entry: ArchiveEntry) -> bytes:
    """The archived bytes, checked against the hash in their name."""
    body = await storage.get(entry.body_key)
    if hashlib.sha256(body).hexdigest() != entry.body_sha256:
        raise CorruptArchiveError(
            f"{storage.uri(entry.body_key)} does not hash to its name; the archive is damaged"
        )
    return body


async def _entry(storage: Storage, body_key: str, folder: str, sha: str) -> ArchiveEntry:
    meta_key = body_key[: -len(".json")] + ".meta.json"
    try:
        document = json.loads(await storage.get(meta_key))
        if not isinstance(document, dict):
            raise ValueError("not an object")
    except (ObjectNotFoundError, ValueError):
        return await _entry_without_sidecar(storage, body_key, folder, sha)
    return ArchiveEntry(
        task_id=str(document.get("task_id") or unquote(folder)),
        body_sha256=sha,
        body_key=body_key,
        size_bytes=int(document.get("size_bytes", 0)),
        received_at=_parse_time(document.get("received_at")),
        code=document.get("code"),
        msg=document.get("msg"),
        state=document.get("state"),
        signature=str(document.get("signature") or "UNVERIFIED"),
        headers=dict(document.get("headers") or {}),
    )


async def _entry_without_sidecar(
    storage: Storage, body_key: str, folder: str, sha: str
) -> ArchiveEntry:
    """A body whose sidecar is unreadable: what the body itself says, no received time."""
    body = await storage.get(body_key)
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
