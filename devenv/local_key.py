"""The webhook key a local run signs and verifies with: generated once, kept under DATA_DIR.

The ingest refuses to start without a key (or the INGEST_ALLOW_UNSIGNED opt-in), so
``make run`` gives it this one and ``make send-example`` signs with it: the local pipeline
runs the same signed path as production.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["KEY_FILE", "ensure_local_key", "read_local_key"]

KEY_FILE = "local-webhook-key"


def read_local_key(data_dir: Path) -> str | None:
    """The key a local run generated under ``data_dir``, if any."""
    try:
        key = (data_dir / KEY_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key or None


def ensure_local_key(data_dir: Path) -> str:
    """The local key, generated (readable by the owner only) when there is none yet."""
    key = read_local_key(data_dir)
    if key is not None:
        return key
    key = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / f".{KEY_FILE}.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    partial.replace(data_dir / KEY_FILE)
    return key
