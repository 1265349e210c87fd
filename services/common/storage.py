"""Where the processor's MIDI files and the archiver's raw callbacks are kept.

One small interface, :class:`Storage`, with object-store semantics (whole objects under
``/``-separated keys, atomic puts), so local files and S3-compatible object storage are
interchangeable by configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from .errors import ConfigError, ObjectNotFoundError, StorageError
from .settings import StorageSettings

__all__ = ["LocalStorage", "Storage", "check_key", "open_storage"]


def check_key(key: str) -> str:
    """Refuse keys that could leave the storage root: absolute, empty parts, ``.``/``..``."""
    parts = PurePosixPath(key).parts
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
        or not parts
    ):
        raise StorageError(f"invalid storage key {key!r}")
    return key


@runtime_checkable
class Storage(Protocol):
    """Whole-object storage. Every method raises :class:`StorageError` on failure."""

    async def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and durably; return the object's URI.

        Readers see the old object or the new one, never a part.
        """

    async def get(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFoundError` when absent."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; absent objects are not an error."""

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Keys starting with ``prefix``, in lexicographic order."""

    def uri(self, key: str) -> str: ...


class LocalStorage:
    """Files below a root directory: temporary file, fsync, rename, fsync of the directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    async def put(self, key: str, data: bytes) -> str:
        path = self.path(key)
        try:
            await asyncio.to_thread(_write_durably, path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path.as_uri()

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        keys = await asyncio.to_thread(self._walk, prefix)
        for key in keys:
            yield key

    def _walk(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = base + name
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)


def _write_durably(path: Path, data: bytes) -> None:
    directory = path.parent
    created = _makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    for folder in (directory, *created):
        _fsync_dir(folder)


def _makedirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its parents; return the parents of newly made folders."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    # A new folder's entry lives in its parent: fsync the parents to persist it.
    return [folder.parent for folder in missing]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def open_storage(settings: StorageSettings) -> AsyncIterator[Storage]:
    """The storage the settings select, open for the duration of the ``async with``."""
    if settings.backend == "local":
        yield LocalStorage(settings.data_dir)
        return
    raise ConfigError(f"STORAGE_BACKEND={settings.backend!r} is not supported by this build")
