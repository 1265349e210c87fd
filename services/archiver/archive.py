"""Where and how one callback is archived: content-addressed, byte-exact, with a sidecar.

Layout (below the storage root: ``$DATA_DIR`` or the S3 bucket and prefix)::

    raw/<task key>/<sha256>.json        the body exactly as the ingest received it
    raw/<task key>/<sha256>.meta.json   the sidecar: when, what, how it was verified

``<task key>`` is :func:`~services.common.keys.task_key` (percent-encoding), ``<sha256>``
the hex SHA-256 of the body. A body is never rewritten: a repeat (a redelivery, a provider
retry, a replay) finds it and changes nothing, so the sidecar of the first delivery stays.
The sidecar is written before the body, so a body present means its sidecar is too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from services.common.errors import ArchiveStorageError, InvalidEventError, StorageError
from services.common.events import KEPT_HEADERS, CallbackEvent
from services.common.keys import TASK_ID_RULE, is_valid_task_id, task_key
from services.common.storage import Storage

# ArchiveStorageError and InvalidEventError live in the project's error tree
# (services.common.errors) and are named here too, where archive_event raises them.
__all__ = [
    "RAW_PREFIX",
    "SIDECAR_HEADERS",
    "SIDECAR_VERSION",
    "ArchiveStorageError",
    "InvalidEventError",
    "Outcome",
    "archive_event",
    "check_event",
    "metadata_key",
    "raw_key",
    "sidecar",
    "sidecar_headers",
]

RAW_PREFIX = "raw/"
SIDECAR_VERSION = 1

#: Request headers the sidecar keeps (matched case-insensitively); nothing else is kept.
SIDECAR_HEADERS = KEPT_HEADERS

#: Names never kept even if someone adds them to :data:`SIDECAR_HEADERS` by mistake.
_SECRET_NAME = re.compile(r"signature|secret|token|key|auth|cookie|password", re.IGNORECASE)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

Outcome = Literal["new", "existing"]
T = TypeVar("T")


def raw_key(task_id: str, body_sha256: str) -> str:
    return f"{RAW_PREFIX}{task_key(task_id)}/{body_sha256}.json"


def metadata_key(task_id: str, body_sha256: str) -> str:
    return f"{RAW_PREFIX}{task_key(task_id)}/{body_sha256}.meta.json"


def sidecar_headers(headers: dict[str, str]) -> dict[str, str]:
    """The selected request headers, canonical names, sorted; never a secret."""
    wanted = {name.lower(): name for name in SIDECAR_HEADERS}
    kept = {}
    for name, value in headers.items():
        canonical = wanted.get(name.lower())
        if canonical is not None and not _SECRET_NAME.search(canonical):
            kept[canonical] = value
    return dict(sorted(kept.items()))


def sidecar(event: CallbackEvent, *, archived_at: datetime | None = None) -> bytes:
    """Metadata kept beside the body; never keys, signatures or other secrets."""
    document: dict[str, Any] = {
        "version": SIDECAR_VERSION,
        "task_id": event.task_id,
        "delivery_key": event.delivery_key,
        "body_sha256": event.body_sha256,
        "size_bytes": len(event.body),
        "received_at": event.received_at.astimezone(UTC).isoformat(),
        "archived_at": (archived_at or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "code": event.code,
        "msg": event.msg,
        "state": event.state,
        "signature": event.signature,
        "replay": event.replay,
        "source": event.source,
        "request_id": event.request_id,
        "headers": sidecar_headers(event.headers),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def check_event(event: CallbackEvent) -> None:
    """Refuse events whose name in the archive would be wrong or unusable."""
    if not is_valid_task_id(event.task_id):
        raise InvalidEventError("invalid_task_id", TASK_ID_RULE)
    if not _SHA256_HEX.fullmatch(event.body_sha256):
        raise InvalidEventError("invalid_sha256", "body_sha256 is not 64 lower-case hex digits")
    if hashlib.sha256(event.body).hexdigest() != event.body_sha256:
        raise InvalidEventError("sha256_mismatch", "the body does not hash to body_sha256")


async def archive_event(storage: Storage, event: CallbackEvent) -> tuple[Outcome, int]:
    """Archive ``event`` durably unless its body already is; return the outcome and bytes written.

    Raises :class:`InvalidEventError` for an event that cannot be archived and
    :class:`ArchiveStorageError` when storage fails (nothing is half-written: every put is
    atomic, and a retry picks up where this one stopped).
    """
    check_event(event)
    body_key = raw_key(event.task_id, event.body_sha256)
    meta_key = metadata_key(event.task_id, event.body_sha256)
    if await _storage_call("exists", storage.exists(body_key)):
        return "existing", 0
    written = 0
    # A sidecar without its body is an earlier attempt cut short: keep it, it is the first.
    if not await _storage_call("exists", storage.exists(meta_key)):
        document = sidecar(event)
        await _storage_call("put_sidecar", storage.put(meta_key, document))
        written += len(document)
    await _storage_call("put_body", storage.put(body_key, event.body))
    return "new", written + len(event.body)


async def _storage_call(operation: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except StorageError as exc:
        raise ArchiveStorageError(operation, exc) from exc
