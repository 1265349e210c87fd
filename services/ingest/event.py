"""The event an accepted callback becomes: its parsed fields, its bytes, the kept headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from services.common.events import KEPT_HEADERS, CallbackEvent, SignatureStatus, sha256_hex

from .body import ParsedCallback

__all__ = ["build_event"]


def build_event(
    callback: ParsedCallback,
    body: bytes,
    received_at: datetime,
    headers: Mapping[str, str],
    *,
    signature: SignatureStatus,
) -> CallbackEvent:
    """The event for an accepted body; text taken from the request is made valid UTF-8."""
    return CallbackEvent(
        task_id=callback.task_id,
        received_at=received_at,
        body=body,
        body_sha256=sha256_hex(body),
        code=callback.code,
        msg=_text(callback.msg),
        state=_text(callback.state),
        signature=signature,
        headers={name: _text(headers[name]) or "" for name in KEPT_HEADERS if name in headers},
    )


def _text(value: str | None) -> str | None:
    """``value`` as valid Unicode: lone surrogates (JSON ``\\ud800``, odd header bytes) -> '?'."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")
