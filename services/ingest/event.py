"""The event an accepted callback becomes: its parsed fields, its bytes, the kept headers.

The event carries the body whole and copies a few things beside it (msg, data.state, some
headers). Those copies are capped to :data:`MAX_COPIED_CHARS` characters each, so an event
is never more than its body plus ``EVENT_ENVELOPE_BYTES`` (settings), whatever the body
holds: a legal body made mostly of ``msg`` still fits in one Kafka record.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, cast

from services.common.callback import well_formed
from services.common.events import KEPT_HEADERS, CallbackEvent, SignatureStatus, sha256_hex

from .body import ParsedCallback

__all__ = ["MAX_COPIED_CHARS", "build_event"]

#: Longest text copied beside the body (msg, state, a header); the body keeps it whole.
MAX_COPIED_CHARS: Final = 4096


def build_event(
    callback: ParsedCallback,
    body: bytes | bytearray,
    received_at: datetime,
    headers: Mapping[str, str],
    *,
    signature: SignatureStatus,
    request_id: str | None = None,
) -> CallbackEvent:
    """The event for an accepted body; text taken from the request is made valid UTF-8."""
    # The read buffer itself, not a copy: the event only reads it (length, hash, Avro).
    whole = cast(bytes, body)
    return CallbackEvent(
        task_id=callback.task_id,
        received_at=received_at,
        body=whole,
        body_sha256=sha256_hex(whole),
        code=callback.code,
        msg=_copied(callback.msg),
        state=_copied(callback.state),
        signature=signature,
        headers={name: _copied(headers[name]) or "" for name in KEPT_HEADERS if name in headers},
        request_id=request_id,
    )


def _copied(value: str | None) -> str | None:
    """``value`` capped to :data:`MAX_COPIED_CHARS` (with a marker) and made valid Unicode."""
    if value is not None and len(value) > MAX_COPIED_CHARS:
        more = len(value) - MAX_COPIED_CHARS
        value = f"{value[:MAX_COPIED_CHARS]}... [{more} more characters, see body]"
    return _text(value)


def _text(value: str | None) -> str | None:
    """``value`` as valid Unicode: each lone surrogate (JSON ``\\ud800``, header bytes that
    are not UTF-8) becomes U+FFFD, as in the notes event and the MIDI file."""
    return None if value is None else well_formed(value)
