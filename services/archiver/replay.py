"""Re-publishing archived callbacks, marked as replays, so the processor re-renders them.

A replayed event carries the archived body, its original received time and sidecar facts,
``replay = true`` in the event and a ``replay: 1`` Kafka header, so consumers, logs and
metrics can tell it from a live delivery, and its :class:`ReplayMark` headers (which
replay, by whom), so the tracker puts it in the task's timeline. Events are published in
received-time order, keyed by task id like the ingest does, so each task's callbacks reach
the processor in the order they first arrived and its last MIDI file is the same as before.

An entry whose body does not match it (hash, task id) or cannot be read is skipped and
reported, never published: an edited sidecar must not replay one task's body as another's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from services.common.errors import CorruptArchiveError, StorageError
from services.common.events import CallbackEvent
from services.common.kafka import Acknowledgement, Publisher
from services.common.replays import REPLAY_HEADER, ReplayMark
from services.common.storage import Storage

from .catalog import ArchiveEntry, read_body

__all__ = ["IN_FLIGHT", "REPLAY_HEADER", "replay", "replay_event"]

#: Records awaiting the broker's acknowledgement at once: one at a time, a replay ran at a
#: round trip per record, well below the processor's pace (bench/replay).
IN_FLIGHT = 64


def replay_event(entry: ArchiveEntry, body: bytes) -> CallbackEvent:
    return CallbackEvent(
        task_id=entry.task_id,
        received_at=entry.received_at or datetime.now(UTC),
        body=body,
        body_sha256=entry.body_sha256,
        code=entry.code,
        msg=entry.msg,
        state=entry.state,
        signature="VERIFIED" if entry.signature == "VERIFIED" else "UNVERIFIED",
        headers=dict(entry.headers),
        replay=True,
        source=entry.source,
        request_id=entry.request_id,
    )


async def replay(
    storage: Storage,
    publisher: Publisher,
    topic: str,
    entries: Sequence[ArchiveEntry],
    *,
    on_sent: Callable[[ArchiveEntry], None] = lambda _entry: None,
    on_skipped: Callable[[ArchiveEntry, str], None] = lambda _entry, _why: None,
    timeout: float = 30.0,  # noqa: ASYNC109 - a per-record deadline, passed on
    mark: ReplayMark | None = None,
    window: int = IN_FLIGHT,
) -> int:
    """Publish every usable entry in the given order; return how many were sent. An entry
    whose body is unreadable or does not match it goes to ``on_skipped`` with the reason,
    and the replay goes on. Every record carries ``mark``'s headers (a new replay id when
    none is given).

    Records are handed to the producer one after another (so each partition gets them in
    this order) with up to ``window`` awaiting the broker's acknowledgement at once;
    ``on_sent`` is called in order, as each is acknowledged.

    Raises :class:`~services.common.errors.PublishError` at the first failure to publish;
    what was acknowledged before it stays sent, and records after it may have been sent
    too (replaying again is harmless: every effect is idempotent).
    """
    headers = (mark or ReplayMark()).headers()
    in_flight: deque[tuple[ArchiveEntry, Acknowledgement]] = deque()
    sent = 0

    async def settle_oldest() -> None:
        nonlocal sent
        entry, acknowledgement = in_flight.popleft()
        await acknowledgement.wait(timeout)
        sent += 1
        on_sent(entry)

    for entry in entries:
        try:
            body = await read_body(storage, entry)
        except (CorruptArchiveError, StorageError) as exc:
            on_skipped(entry, str(exc))
            continue
        event = replay_event(entry, body)
        acknowledgement = await publisher.enqueue(
            topic, key=entry.task_id.encode(), value=event.encode(), headers=headers
        )
        in_flight.append((entry, acknowledgement))
        if len(in_flight) >= window:
            await settle_oldest()
    while in_flight:
        await settle_oldest()
    return sent
