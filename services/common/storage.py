"""Where the processor's MIDI files and the archiver's raw callbacks are kept.

One small interface, :class:`Storage`, with object-store semantics (whole objects under
``/``-separated keys, atomic puts), so local files and S3-compatible object storage are
interchangeable by configuration: :class:`LocalStorage` (the default) and
:class:`S3Storage` (``STORAGE_BACKEND=s3``), both opened by :func:`open_storage`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import functools
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from .errors import ConfigError, ObjectNotFoundError, StorageError
from .settings import StorageSettings

__all__ = [
    "TEMPORARY_PREFIX",
    "VERSIONS_FOLDER",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "check_key",
    "open_storage",
]

#: Name prefix of LocalStorage's temporary files; never listed, safe to remove when stale.
TEMPORARY_PREFIX = ".tmp-"

#: LocalStorage's folder (below the root) of the versions :meth:`Storage.put_versioned`
#: compares; never listed.
VERSIONS_FOLDER = ".versions"
#: The S3 user metadata (``x-amz-meta-version``) holding an object's version.
_VERSION_METADATA = "version"

#: A conditional put refused because another writer changed the object first.
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey")

#: What the S3 client can raise besides our own errors (converted to StorageError).
_S3_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


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

    async def put_versioned(self, key: str, data: bytes, version: str) -> str | None:
        """Like :meth:`put`, unless the object was stored with a greater ``version``.

        Versions compare as strings; an object without one (written by :meth:`put`) is the
        oldest. The comparison and the write are one step against concurrent writers.
        Returns the object's URI, or ``None`` when a newer version is kept.
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

    def _version_path(self, key: str) -> Path:
        return self.root.joinpath(VERSIONS_FOLDER, *check_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> str:
        path = self.path(key)
        try:
            await asyncio.to_thread(_write_durably, path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path.as_uri()

    async def put_versioned(self, key: str, data: bytes, version: str) -> str | None:
        """The version lives in ``.versions/<key>``; a lock file beside it makes the
        compare and the write one step for every process sharing the folder."""
        path = self.path(key)
        version_path = self._version_path(key)
        try:
            written = await asyncio.to_thread(_put_versioned, path, version_path, data, version)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path.as_uri() if written else None

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    async def exists(self, key: str) -> bool:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.is_file)
        except OSError as exc:
            raise StorageError(f"cannot look up {path}: {exc.strerror or exc}") from exc

    async def delete(self, key: str) -> None:
        path = self.path(key)
        version_path = self._version_path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            # The version goes with the object (S3 drops metadata with it too).
            await asyncio.to_thread(version_path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        try:
            keys = await asyncio.to_thread(self._walk, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list {self.root}: {exc.strerror or exc}") from exc
        for key in keys:
            yield key

    async def remove_temporary_files(self, folder: str) -> builtins.list[str]:
        """Delete the temporary files a killed writer left below ``folder``; return them.

        Safe while other writers run: a writer whose temporary file vanishes fails its
        ``put`` with :class:`StorageError` and retries, so nothing is ever half-written.
        """
        top = self.path(folder)
        try:
            return await asyncio.to_thread(_remove_temporaries, top)
        except OSError as exc:
            raise StorageError(f"cannot clean {top}: {exc.strerror or exc}") from exc

    def _walk(self, prefix: str) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == str(self.root) and VERSIONS_FOLDER in dirnames:
                dirnames.remove(VERSIONS_FOLDER)
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.startswith(TEMPORARY_PREFIX):
                    continue
                key = base + name
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)


def _remove_temporaries(top: Path) -> list[str]:
    removed: list[str] = []
    if not top.is_dir():
        return removed
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            if name.startswith(TEMPORARY_PREFIX):
                path = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
    return removed


def _put_versioned(path: Path, version_path: Path, data: bytes, version: str) -> bool:
    """Under the key's lock: compare, then write the version, then the object.

    Version first: a crash between the two leaves the newer version over the older file,
    which only the same record (redelivered, since it was not committed) can match and
    rewrite; the other order would let an older body in meanwhile.
    """
    _makedirs(version_path.parent)
    lock = os.open(version_path.with_name(version_path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released with the descriptor
        try:
            current = version_path.read_text("utf-8")
        except FileNotFoundError:
            current = ""
        if version < current:
            return False
        _write_durably(version_path, version.encode("utf-8"))
        _write_durably(path, data)
        return True
    finally:
        os.close(lock)


def _write_durably(path: Path, data: bytes) -> None:
    directory = path.parent
    created = _makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp creates 0600; give the file the mode a plain open() would.
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
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


class S3Storage:
    """Objects in one bucket of an S3-compatible store, below an optional key prefix.

    A ``PutObject`` replaces an object in one step: readers see the old object or the new
    one, never a part, and an acknowledged put is durable. Errors from botocore are
    converted to :class:`StorageError` here, where they enter.
    """

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = _normalize_prefix(prefix)
        self._page_size = page_size

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    async def put(self, key: str, data: bytes) -> str:
        name = self.object_key(key)
        try:
            await self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
        except _S3_ERRORS as exc:
            raise StorageError(f"cannot write {self.uri(key)}: {_describe(exc)}") from exc
        return self.uri(key)

    async def put_versioned(self, key: str, data: bytes, version: str) -> str | None:
        """The version travels as the object's metadata; the write is conditional on the
        object compared (``If-Match`` its ETag, ``If-None-Match: *`` when absent), and a
        writer that lost the race compares again."""
        name = self.object_key(key)
        while True:
            current = await self._head(key)
            stored = (
                "" if current is None else current.get("Metadata", {}).get(_VERSION_METADATA, "")
            )
            if version < stored:
                return None
            condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current["ETag"]}
            try:
                await self._client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=data,
                    Metadata={_VERSION_METADATA: version},
                    **condition,
                )
            except ClientError as exc:
                if _error_code(exc) in _LOST_RACE:
                    continue
                raise StorageError(f"cannot write {self.uri(key)}: {_describe(exc)}") from exc
            except _S3_ERRORS as exc:
                raise StorageError(f"cannot write {self.uri(key)}: {_describe(exc)}") from exc
            return self.uri(key)

    async def _head(self, key: str) -> dict[str, Any] | None:
        """The object's ``HeadObject`` answer; ``None`` when absent."""
        try:
            head: dict[str, Any] = await self._client.head_object(
                Bucket=self.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot look up {self.uri(key)}: {_describe(exc)}") from exc
        except _S3_ERRORS as exc:
            raise StorageError(f"cannot look up {self.uri(key)}: {_describe(exc)}") from exc
        return head

    async def get(self, key: str) -> bytes:
        name = self.object_key(key)
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=name)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFoundError(f"no object {key!r} in s3://{self.bucket}") from None
            raise StorageError(f"cannot read {self.uri(key)}: {_describe(exc)}") from exc
        except _S3_ERRORS as exc:
            raise StorageError(f"cannot read {self.uri(key)}: {_describe(exc)}") from exc
        return data

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=name)
        except _S3_ERRORS as exc:
            raise StorageError(f"cannot delete {self.uri(key)}: {_describe(exc)}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        # S3 lists keys in UTF-8 byte order, which is the code point order ``sorted`` uses.
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self.prefix + prefix,
            PaginationConfig={"PageSize": self._page_size},
        )
        try:
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(self.prefix) :]
        except _S3_ERRORS as exc:
            raise StorageError(
                f"cannot list s3://{self.bucket}/{self.prefix}{prefix}: {_describe(exc)}"
            ) from exc

    async def check_bucket(self) -> None:
        """Fail early, with a message saying what to fix, when the bucket is unusable."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(
                    f"S3_BUCKET={self.bucket!r} does not exist at the configured endpoint; "
                    "create it or fix S3_BUCKET / S3_ENDPOINT_URL"
                ) from None
            raise StorageError(
                f"cannot use bucket {self.bucket!r}: {_describe(exc)} "
                "(check the AWS credentials and the bucket's permissions)"
            ) from exc
        except _S3_ERRORS as exc:
            raise StorageError(f"cannot reach bucket {self.bucket!r}: {_describe(exc)}") from exc


def _normalize_prefix(prefix: str) -> str:
    """``"a/b"``, ``"/a/b/"`` -> ``"a/b/"``; empty stays empty."""
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    check_key(stripped)
    return stripped + "/"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def open_storage(settings: StorageSettings) -> AsyncIterator[Storage]:
    """The storage the settings select, open for the duration of the ``async with``.

    For S3 this opens one client (one connection pool) for the process; credentials come
    from the standard AWS chain (environment, shared config files, instance roles).
    """
    if settings.backend == "local":
        yield LocalStorage(settings.data_dir)
        return
    if settings.backend == "s3":
        if not settings.s3_bucket:
            raise ConfigError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        config = AioConfig(
            # Custom endpoints (MinIO, Ceph, moto...) rarely serve virtual-host buckets.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=settings.s3_endpoint_url,
                        region_name=settings.s3_region,
                        config=config,
                    )
                )
            except (BotoCoreError, ValueError) as exc:
                raise ConfigError(f"cannot configure the S3 client: {exc}") from exc
            storage = S3Storage(client, settings.s3_bucket, settings.s3_prefix)
            await storage.check_bucket()
            yield storage
        return
    raise ConfigError(f"STORAGE_BACKEND={settings.backend!r} is not supported by this build")


@functools.cache
def _umask() -> int:
    """The process umask, read once; /proc avoids os.umask's set-to-read race between threads."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask
