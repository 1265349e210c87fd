"""Helpers for the archiver's tests: events and the archive on disk."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.common.events import CallbackEvent, sha256_hex

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def callback_body(task_id: str, *, code: int = 200, pitch: int = 60, notes: int = 2) -> bytes:
    """A provider-shaped callback body, formatted like the provider does (not canonical)."""
    payload = {
        "code": code,
        "msg": "success" if code == 200 else "failed",
        "data": {
            "taskId": task_id,
            "state": "complete" if code == 200 else "failed",
            "instruments": [
                {
                    "name": "Acoustic Grand Piano",
                    "notes": [
                        {
                            "pitch": pitch + i,
                            "start": i * 0.5,
                            "end": i * 0.5 + 0.25,
                            "velocity": 0.8,
                        }
                        for i in range(notes)
                    ],
                }
            ]
            if code == 200
            else [],
        },
    }
    return json.dumps(payload, indent=1).encode() + b"\n"


def make_event(
    task_id: str,
    body: bytes | None = None,
    *,
    received_at: datetime = T0,
    headers: dict[str, str] | None = None,
    replay: bool = False,
    code: int = 200,
) -> CallbackEvent:
    body = callback_body(task_id, code=code) if body is None else body
    return CallbackEvent(
        task_id=task_id,
        received_at=received_at,
        body=body,
        body_sha256=sha256_hex(body),
        code=code,
        msg="success" if code == 200 else "failed",
        state="complete" if code == 200 else "failed",
        signature="VERIFIED",
        headers=headers if headers is not None else {"Content-Type": "application/json"},
        replay=replay,
    )


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def bodies(data_dir: Path) -> dict[Path, bytes]:
    """Every archived body below ``data_dir/raw``: path -> bytes."""
    raw = data_dir / "raw"
    if not raw.is_dir():
        return {}
    return {
        path: path.read_bytes()
        for path in sorted(raw.glob("*/*.json"))
        if not path.name.endswith(".meta.json") and not path.name.startswith(".tmp-")
    }


def assert_content_addressed(found: dict[Path, bytes]) -> None:
    """Every body hashes to its file name and has its sidecar beside it."""
    for path, body in found.items():
        assert hashlib.sha256(body).hexdigest() == path.stem, f"{path} is not what it says"
        meta = path.with_name(f"{path.stem}.meta.json")
        assert meta.is_file(), f"{path} has no sidecar"
        assert json.loads(meta.read_bytes())["body_sha256"] == path.stem


def temporary_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob(".tmp-*")) if data_dir.is_dir() else []
