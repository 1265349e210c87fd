"""Where and how one callback is archived: content-addressed, byte-exact, with a sidecar."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from services.common.events import CallbackEvent
from services.common.keys import task_key

__all__ = ["metadata_key", "raw_key", "sidecar"]


def raw_key(task_id: str, body_sha256: str) -> str:
    return f"raw/{task_key(task_id)}/{body_sha256}.json"


def metadata_key(task_id: str, body_sha256: str) -> str:
    return f"raw/{task_key(task_id)}/{body_sha256}.meta.json"


def sidecar(event: CallbackEvent) -> bytes:
    """Metadata kept beside the body; never keys, signatures or other secrets."""
    document: dict[str, Any] = {
        "task_id": event.task_id,
        "delivery_key": event.delivery_key,
        "body_sha256": event.body_sha256,
        "size_bytes": len(event.body),
        "received_at": event.received_at.astimezone(UTC).isoformat(),
        "code": event.code,
        "msg": event.msg,
        "state": event.state,
        "signature": event.signature,
        "headers": dict(sorted(event.headers.items())),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
