"""The secrets a local run uses, generated once and kept under DATA_DIR: the webhook key
the simulator signs with and the ingest verifies with, and the tracker's API token.

The ingest refuses to start without a key (or the INGEST_ALLOW_UNSIGNED opt-in), so
``make run`` gives it this one and ``make send-example`` signs with it: the local pipeline
runs the same signed path as production. The tracker's API refuses everything without a
token, so ``make run`` gives it one and ``make demo`` sends it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["KEY_FILE", "TOKEN_FILE", "ensure_local_key", "read_local_key"]

KEY_FILE = "local-webhook-key"
TOKEN_FILE = "local-tracker-token"


def read_local_key(data_dir: Path, name: str = KEY_FILE) -> str | None:
    """The key (or token: ``name``) a local run generated under ``data_dir``, if any."""
    try:
        key = (data_dir / name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key or None


def ensure_local_key(data_dir: Path, name: str = KEY_FILE) -> str:
    """The local key (or token: ``name``), generated (readable by the owner only) when
    there is none yet."""
    key = read_local_key(data_dir, name)
    if key is not None:
        return key
    key = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / f".{name}.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    partial.replace(data_dir / name)
    return key
