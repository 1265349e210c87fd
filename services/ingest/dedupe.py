"""Remembering deliveries: one event per (task id, body), one body per signature.

Two records per task, in one store shared by every replica:

* the **delivery** ``(task id, sha256 of body)``: absent, ``pending`` (a replica holds a
  short lease while Kafka acknowledges) or ``done`` (kept for the dedupe window);
* the **signature binding** ``(task id, timestamp, signature) -> sha256``: the first body
  seen under a signature, kept at least as long as the signature can pass verification.

:meth:`DedupeStore.claim` checks the binding and claims the delivery in one atomic step
(a Lua script on Redis, one event-loop step in process), so of N concurrent identical
deliveries exactly one is ``CLAIMED``. The owner then ``complete()``s (after Kafka's ack)
or ``release()``s (publish failed: the sender's retry must go through). A claim whose
owner died expires with its lease.

On Redis, the claims and completions of concurrent requests are sent together: whatever
was asked during one event-loop step goes out as one pipeline (one write, one read, one
pooled connection) instead of one round trip each. Each command is as atomic as before
(the claim is still one script); only redis-py's per-command cost is shared, which was
most of the dedupe's CPU under load.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
from redis.exceptions import NoScriptError, RedisError

from services.common.errors import PipelineError
from services.common.keys import task_key
from services.common.settings import RedisMode

from .topology import REDIS_ERRORS, RedisClient, RedisConnection, connect

__all__ = [
    "Claim",
    "ClaimResult",
    "DedupeStore",
    "DedupeUnavailable",
    "Delivery",
    "MemoryDedupeStore",
    "RedisDedupeStore",
    "binding_ttl",
]

log = structlog.get_logger(__name__)


class DedupeUnavailable(PipelineError):
    """The dedupe store did not answer; the caller accepts without dedupe or refuses, as
    ``INGEST_DEDUPE_UNAVAILABLE`` says, and says so."""


class Claim(enum.Enum):
    CLAIMED = "claimed"  # the caller owns the delivery: publish, then complete or release
    DUPLICATE = "duplicate"  # already published within the window
    PENDING = "pending"  # another request holds the lease right now
    SIGNATURE_REUSED = "reused"  # the signature was first seen with another body


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the store needs to know about one request."""

    task_id: str
    body_sha256: str
    #: ``(timestamp, signature)`` of a verified request; ``None`` when unsigned.
    signature: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claim: Claim
    #: Identifies this request's lease, so only its owner can release it.
    token: str = ""


def binding_ttl(tolerance_seconds: int) -> int:
    """How long a signature binding is kept: longer than the signature can be valid.

    A timestamp ``t`` verifies from ``t - tolerance`` to ``t + tolerance``; a binding first
    written at the earliest moment must outlive the latest one, plus a minute of slack.
    """
    return 2 * tolerance_seconds + 60


class DedupeStore(Protocol):
    """The one interface the request handler sees; in process or Redis behind it."""

    async def claim(self, delivery: Delivery, *, lease_seconds: float) -> ClaimResult: ...

    async def complete(self, delivery: Delivery, token: str) -> None: ...

    async def release(self, delivery: Delivery, token: str) -> None: ...

    async def wait(self, delivery: Delivery, within: float) -> None:
        """Return when the delivery is no longer pending, or after ``within`` seconds."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- in process


@dataclass(slots=True)
class _Entry:
    value: str  # "done", "pending:<token>", or a body sha256 for bindings
    expires: float


class MemoryDedupeStore:
    """A single replica's store: bounded, expiring, lost on restart (documented)."""

    def __init__(
        self,
        *,
        window_seconds: float,
        binding_seconds: float,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_seconds
        self._binding_seconds = binding_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._deliveries: OrderedDict[str, _Entry] = OrderedDict()
        self._bindings: OrderedDict[str, _Entry] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}

    def _get(self, table: OrderedDict[str, _Entry], key: str) -> _Entry | None:
        entry = table.get(key)
        if entry is not None and entry.expires <= self._clock():
            del table[key]
            return None
        return entry

    def _put(self, table: OrderedDict[str, _Entry], key: str, value: str, ttl: float) -> None:
        table[key] = _Entry(value, self._clock() + ttl)
        table.move_to_end(key)
        now = self._clock()
        # Oldest first: drop what expired, then the oldest beyond the bound.
        while table:
            oldest_key, oldest = next(iter(table.items()))
            if oldest.expires > now and len(table) <= self._max_entries:
                break
            del table[oldest_key]

    def _notify(self, key: str) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    async def claim(self, delivery: Delivery, *, lease_seconds: float) -> ClaimResult:
        if delivery.signature is not None:
            binding = _binding_key(delivery)
            bound = self._get(self._bindings, binding)
            if bound is None:
                self._put(self._bindings, binding, delivery.body_sha256, self._binding_seconds)
            elif bound.value != delivery.body_sha256:
                return ClaimResult(Claim.SIGNATURE_REUSED)
        key = _delivery_key(delivery)
        entry = self._get(self._deliveries, key)
        if entry is None:
            token = uuid.uuid4().hex
            self._put(self._deliveries, key, f"pending:{token}", lease_seconds)
            return ClaimResult(Claim.CLAIMED, token)
        return ClaimResult(Claim.DUPLICATE if entry.value == "done" else Claim.PENDING)

    async def complete(self, delivery: Delivery, token: str) -> None:
        key = _delivery_key(delivery)
        self._put(self._deliveries, key, "done", self._window)
        self._notify(key)

    async def release(self, delivery: Delivery, token: str) -> None:
        key = _delivery_key(delivery)
        entry = self._get(self._deliveries, key)
        if entry is not None and entry.value == f"pending:{token}":
            del self._deliveries[key]
        self._notify(key)

    async def wait(self, delivery: Delivery, within: float) -> None:
        key = _delivery_key(delivery)
        entry = self._get(self._deliveries, key)
        if entry is None or not entry.value.startswith("pending:"):
            return
        event = self._changed.setdefault(key, asyncio.Event())
        # The lease may expire without a notification: never wait past it.
        limit = min(within, max(0.0, entry.expires - self._clock()))
        try:
            async with asyncio.timeout(limit):
                await event.wait()
        except TimeoutError:
            pass

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for event in self._changed.values():
            event.set()
        self._changed.clear()


# --------------------------------------------------------------------------- Redis

#: KEYS: [binding key,] delivery key (an unsigned request has no binding: one key, so that
#: every key the script names shares the task's cluster slot).
#: ARGV: body sha256, binding ttl (s), lease token, lease ttl (ms).
_CLAIM_SCRIPT: Final = """
local delivery = KEYS[#KEYS]
if #KEYS == 2 then
  local bound = redis.call('GET', KEYS[1])
  if not bound then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  elseif bound ~= ARGV[1] then
    return 'reused'
  end
end
local state = redis.call('GET', delivery)
if not state then
  redis.call('SET', delivery, 'pending:' .. ARGV[3], 'PX', ARGV[4])
  return 'claimed'
end
if state == 'done' then
  return 'duplicate'
end
return 'pending'
"""
_CLAIM_SHA1: Final = hashlib.sha1(_CLAIM_SCRIPT.encode()).hexdigest()  # Redis names scripts so

#: Delete the delivery only while it is still this request's lease.
_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_WAIT_POLL_SECONDS: Final = 0.02

#: Most commands one pipeline carries; more wait for the next one.
_MAX_PIPELINE: Final = 256


class _Pipeliner:
    """Sends the commands asked for during one event-loop step as one Redis pipeline.

    ``await pipeliner.call(*command)`` answers that command's reply, or raises what Redis
    raised for it, or the connection error that failed the whole pipeline.
    """

    def __init__(self, client: RedisClient) -> None:
        self._redis = client
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def call(self, *command: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        answer: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, answer))
        return answer

    def _flush(self) -> None:
        while self._queued:
            batch = self._queued[:_MAX_PIPELINE]
            del self._queued[:_MAX_PIPELINE]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for command, _ in batch:
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, timeout, cancelled: all fail
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc if isinstance(exc, Exception) else RedisError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for reply, (_, answer) in zip(replies, batch, strict=True):
            if answer.done():
                continue
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            else:
                answer.set_result(reply)

    async def close(self) -> None:
        if self._queued:
            self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


class RedisDedupeStore:
    """The store shared by replicas: every operation is bounded in time; claims and
    completions of concurrent requests share a pipeline (one round trip per loop step).

    Any topology (``topology.py``): every key of one task carries the task's hash tag, so
    on a Cluster the claim script and the commands around it touch one slot.
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        window_seconds: int,
        binding_seconds: int,
        prefix: str = "suno:ingest:",
    ) -> None:
        self._connection = connection
        client = connection.client
        self._redis = client
        self._window = window_seconds
        self._binding_seconds = binding_seconds
        self._prefix = prefix
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._pipeline = _Pipeliner(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        window_seconds: int,
        binding_seconds: int,
        timeout: float = 1.0,
        mode: RedisMode = "standalone",
        master: str = "mymaster",
    ) -> RedisDedupeStore:
        """Raises ValueError when the URL does not suit the mode (the message omits it)."""
        connection = connect(url, mode=mode, master=master, timeout=timeout)
        return cls(connection, window_seconds=window_seconds, binding_seconds=binding_seconds)

    def _keys(self, delivery: Delivery) -> tuple[str, ...]:
        """``[binding,] delivery``: both carry the task's hash tag (one cluster slot)."""
        key = f"{self._prefix}dlv:{_delivery_key(delivery)}"
        if delivery.signature is None:
            return (key,)
        return f"{self._prefix}sig:{_binding_key(delivery)}", key

    async def claim(self, delivery: Delivery, *, lease_seconds: float) -> ClaimResult:
        token = uuid.uuid4().hex
        keys = self._keys(delivery)
        arguments = (
            len(keys),
            *keys,
            delivery.body_sha256,
            self._binding_seconds,
            token,
            max(1, int(lease_seconds * 1000)),
        )
        try:
            try:
                # By digest: the 500-byte script is neither sent nor hashed per request.
                answer = await self._pipeline.call("EVALSHA", _CLAIM_SHA1, *arguments)
            except NoScriptError:
                # A restarted (or failed-over) Redis has an empty script cache: EVAL
                # runs the script and caches it again.
                answer = await self._pipeline.call("EVAL", _CLAIM_SCRIPT, *arguments)
        except REDIS_ERRORS as exc:
            raise DedupeUnavailable(f"Redis did not answer the claim: {exc!r}") from exc
        claim = Claim(answer)
        return ClaimResult(claim, token if claim is Claim.CLAIMED else "")

    async def complete(self, delivery: Delivery, token: str) -> None:
        key = self._keys(delivery)[-1]
        try:
            await self._pipeline.call("SET", key, "done", "EX", self._window)
        except REDIS_ERRORS as exc:
            raise DedupeUnavailable(f"Redis did not record the delivery: {exc!r}") from exc

    async def release(self, delivery: Delivery, token: str) -> None:
        key = self._keys(delivery)[-1]
        try:
            await self._release(keys=[key], args=[token])
        except REDIS_ERRORS as exc:
            raise DedupeUnavailable(f"Redis did not release the claim: {exc!r}") from exc

    async def wait(self, delivery: Delivery, within: float) -> None:
        key = self._keys(delivery)[-1]
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                state = await self._redis.get(key)
                if state is None or not str(state).startswith("pending:"):
                    return
                await asyncio.sleep(_WAIT_POLL_SECONDS)
        except REDIS_ERRORS as exc:
            raise DedupeUnavailable(f"Redis did not answer while waiting: {exc!r}") from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except REDIS_ERRORS as exc:
            raise DedupeUnavailable(f"Redis did not answer PING: {exc!r}") from exc

    async def close(self) -> None:
        await self._pipeline.close()
        await self._connection.aclose()


@functools.lru_cache(maxsize=4096)
def _tag(task_id: str) -> str:
    """The task's hash tag: both keys of one task land in one Redis Cluster slot."""
    return f"{{{task_key(task_id)}}}"


def _delivery_key(delivery: Delivery) -> str:
    return f"{_tag(delivery.task_id)}:{delivery.body_sha256}"


def _binding_key(delivery: Delivery) -> str:
    assert delivery.signature is not None
    timestamp, signature = delivery.signature
    return f"{_tag(delivery.task_id)}:{timestamp}:{signature}"
