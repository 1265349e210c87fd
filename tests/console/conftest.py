"""The real console on a real local port, over a fresh registry and a tmp storage: the
``console`` fixture, shared by the API tests and the browser tests; ``dlq_console`` is
the same with its dead-letter indexer on the session broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from devenv.console_seed import (
    CreatedTask,
    callback_event,
    seed_completed_task,
    simulated_body,
    unique,
)
from services.common.consumer import ConsumerLoop, callback_handler
from services.common.events import CallbackEvent
from services.common.kafka import Publisher
from services.common.metrics import ConsumerMetrics
from services.common.settings import Secret, Settings
from services.common.storage import LocalStorage
from services.console.app import create_app
from services.processor.app import Processor
from services.processor.metrics import ProcessorMetrics
from services.tracker.registry import Registry
from services.tracker.track import Tracking, tracking_handler
from tests.archiver.support import callback_body
from tests.helpers import eventually, read_topic

T = TypeVar("T")

__all__ = [
    "PASSWORD",
    "TOKEN",
    "USER",
    "Console",
    "CreatedTask",
    "callback_event",
    "fixture_console",
    "fixture_guarded",
    "fixture_operator_console",
    "operators",
    "simulated_body",
    "unique",
]

#: The operators of the action tests' consoles: a bearer token and basic-auth credentials.
TOKEN = "operator-token-0123456789"
USER, PASSWORD = "ops", "correct horse"

#: What :func:`dead_letter` sends: no consumer decodes it.
BAD_RECORD = b"\x00not an avro callback"


@dataclass
class Console:
    """The console under test, serving in a thread of its own (so blocking clients, a
    browser driven by Selenium, can talk to it from the test's thread).

    ``url`` is its base URL (``http://127.0.0.1:<port>``, no trailing slash). ``registry``
    is a connected :class:`Registry` on the console's database, bound to the console's
    event loop: call it through :meth:`run` (blocking, from a plain test) or :meth:`arun`
    (awaitable, from an async test), e.g. ``console.run(console.registry.request(...))``.
    ``storage`` is the console's local storage, rooted at ``data_dir``.
    """

    url: str
    registry: Registry
    storage: LocalStorage
    data_dir: Path
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the console's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def arun(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """:meth:`run` for async tests: awaits instead of blocking the test's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def completed_task(
        self,
        *,
        body: bytes | None = None,
        task_id: str | None = None,
        received_at: datetime | None = None,
    ) -> CreatedTask:
        """A task requested, submitted, delivered by callback and ended, as the pipeline
        would leave it (``completed``; ``failed`` or ``empty`` when the body says so): the
        body archived by the archiver's own :func:`archive_event`, the MIDI file rendered
        by the processor's :func:`process_callback` at its key, the delivery and the
        transitions recorded by the registry. ``body`` defaults to a two-note callback;
        :func:`simulated_body` makes a richer one (build it with the same ``task_id``)."""
        return self.run(self._completed_task(body, task_id or unique("task"), received_at))

    async def _completed_task(
        self, body: bytes | None, task_id: str, received_at: datetime | None
    ) -> CreatedTask:
        body = callback_body(task_id) if body is None else body
        return await seed_completed_task(self.registry, self.storage, body, task_id, received_at)


def console_settings(database_url: str, data_dir: Path, **console: Any) -> Settings:
    """The console's settings over ``database_url`` and ``data_dir``; ``console`` overrides
    its own (operators, read-only)."""
    return Settings.from_env({}).with_overrides(
        tracker={"database_url": Secret(database_url)},
        storage={"data_dir": data_dir},
        console={"host": "127.0.0.1", "port": 0, **console},
        # No broker: a port nothing listens on, whatever runs on this machine's 9092.
        kafka={"bootstrap_servers": "127.0.0.1:1"},
    )


@pytest.fixture(name="console")
def fixture_console(database_url: str, tmp_path: Path) -> Iterator[Console]:
    """The real console app (:func:`services.console.app.create_app`) on 127.0.0.1 and a
    free port, over the test's fresh database (migrated by the console at start-up) and a
    local storage in ``tmp_path / "data"``, served by a thread with its own event loop;
    stopped, and its resources released, after the test."""
    with running_console(console_settings(database_url, tmp_path / "data")) as console:
        yield console


def operators(**console: Any) -> dict[str, Any]:
    """The console settings of a console that accepts TOKEN and USER:PASSWORD."""
    return {
        "operator_tokens": (Secret(TOKEN),),
        "operator_credentials": (Secret(f"{USER}:{PASSWORD}"),),
        **console,
    }


@pytest.fixture(name="guarded")
def fixture_guarded(database_url: str, tmp_path: Path) -> Iterator[Console]:
    """A console that accepts TOKEN and USER:PASSWORD, and no Kafka: every refusal of an
    action comes before Kafka."""
    with running_console(console_settings(database_url, tmp_path / "data", **operators())) as c:
        yield c


@pytest.fixture(name="operator_console")
def fixture_operator_console(
    settings: Settings, database_url: str, publisher: Publisher
) -> Iterator[Console]:
    """A console that accepts TOKEN and USER:PASSWORD on the session broker and the test's
    topics (``publisher`` makes them): its replays and redrives reach them, its indexer
    reads the dead letters."""
    chosen = dlq_settings(settings, database_url).with_overrides(console=operators())
    with running_console(chosen) as console:
        yield console


def dlq_settings(settings: Settings, database_url: str) -> Settings:
    """The test's broker and topics, its registry, a console group of its own."""
    return settings.with_overrides(
        tracker={"database_url": Secret(database_url)},
        console={"host": "127.0.0.1", "port": 0, "dlq_group_id": unique("console-dlq")},
    )


@pytest.fixture(name="dlq_console")
def fixture_dlq_console(settings: Settings, database_url: str) -> Iterator[Console]:
    """The real console, its indexer on the test's dead-letter topic."""
    with running_console(dlq_settings(settings, database_url)) as console:
        yield console


async def dead_letter(
    settings: Settings, publisher: Publisher, keys: list[bytes]
) -> list[ConsumerRecord[bytes, bytes]]:
    """One undecodable callback per key, dead-lettered by a real consumer loop with the
    consumers' own record handler; the dead letters as read back from the topic."""
    topics = settings.kafka.topics

    async def handle(_event: CallbackEvent) -> None:
        raise AssertionError("no record of this test decodes")

    loop = ConsumerLoop(
        settings=settings.kafka,
        role="test",
        group_id=settings.processor.group_id,
        topics=[topics.callbacks],
        handler=callback_handler(handle),
        publisher=publisher,
        metrics=ConsumerMetrics("test", CollectorRegistry()),
    )
    for key in keys:
        await publisher.publish(topics.callbacks, key=key, value=BAD_RECORD, timeout=10)
    await loop.start()
    try:
        return await read_topic(settings.kafka.bootstrap_servers, topics.dlq, len(keys))
    finally:
        await loop.stop()


@asynccontextmanager
async def replays_tracked(
    settings: Settings, database_url: str, publisher: Publisher
) -> AsyncIterator[Registry]:
    """The real processor (rendering callbacks into the storage of ``settings``) and the
    tracker's real record handler (writing the registry at ``database_url``), each in a
    consumer loop on the session broker, as the pipeline runs them: what a replay needs
    to reach the task's timeline. Yields a registry of the test's own loop."""
    registry = await Registry.connect(database_url, max_size=2)
    topics = settings.kafka.topics
    processor = Processor(
        settings=settings,
        storage=LocalStorage(settings.storage.data_dir),
        publisher=publisher,
        metrics=ProcessorMetrics(CollectorRegistry()),
    )
    tracking = Tracking(registry, topics, callback_url="", on_request=lambda: None)
    handlers = {
        "processor": ([topics.callbacks], callback_handler(processor.handle)),
        "tracker": ([topics.callbacks, topics.notes], tracking_handler(tracking)),
    }
    loops = [
        ConsumerLoop(
            settings=settings.kafka,
            role=role,
            group_id=unique(role),
            topics=topics_read,
            handler=handler,
            publisher=publisher,
            metrics=ConsumerMetrics(role, CollectorRegistry()),
        )
        for role, (topics_read, handler) in handlers.items()
    ]
    try:
        for loop in loops:
            await loop.start()
        yield registry
    finally:
        for loop in loops:
            await loop.stop()
        await registry.close()


async def indexed(console: Console, count: int) -> int:
    """Wait until the indexer has written ``count`` rows."""

    async def rows() -> int | None:
        found = await console.arun(
            console.registry.pool.fetchval("SELECT count(*) FROM dead_letters")
        )
        assert found <= count, f"{found} rows for {count} dead letters"
        return found if found == count else None

    return await eventually(rows, what=f"{count} dead letters indexed")


def dead_letter_record(key: bytes, *, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    """A record of the dead-letter topic as the consumer loop writes them, for tests
    without a broker (:func:`dead_letter` makes real ones)."""
    headers = [
        ("dlq.reason", b"undecodable"),
        ("dlq.error", b"not an Avro single-object message"),
        ("dlq.source.topic", b"suno.midi.callbacks.v1"),
        ("dlq.source.partition", b"0"),
        ("dlq.source.offset", str(offset).encode()),
        ("dlq.source.timestamp", b"1796070000000"),
        ("dlq.consumer.group", b"suno-midi-processor"),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    size = len(BAD_RECORD)
    return ConsumerRecord(
        "suno.midi.dlq.v1",
        0,
        offset,
        1796070000000,
        0,
        key,
        BAD_RECORD,
        None,
        len(key),
        size,
        headers,
    )


@contextmanager
def running_console(settings: Settings) -> Iterator[Console]:
    """The console of ``settings`` (whose storage must be local), served as the ``console``
    fixture serves it, until the block ends."""
    url_secret = settings.tracker.database_url
    assert url_secret is not None
    database_url, data_dir = url_secret.get(), settings.storage.data_dir
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    started: Future[tuple[str, Registry]] = Future()
    thread = threading.Thread(
        target=_serve, args=(app, loop, database_url, started), name="console", daemon=True
    )
    thread.start()
    url, registry = started.result(timeout=60)
    try:
        yield Console(url, registry, LocalStorage(data_dir), data_dir, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def _serve(
    app: web.Application,
    loop: asyncio.AbstractEventLoop,
    database_url: str,
    started: Future[tuple[str, Registry]],
) -> None:
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> tuple[str, Registry]:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}", await Registry.connect(database_url, max_size=2)

    try:
        url, registry = loop.run_until_complete(start())
    except BaseException as exc:
        started.set_exception(exc)
        loop.run_until_complete(runner.cleanup())
        loop.close()
        return
    started.set_result((url, registry))
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(registry.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()
