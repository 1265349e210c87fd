"""The real console on a real local port, over a fresh registry and a tmp storage: the
``console`` fixture, shared by the API tests and the browser tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from devenv.console_seed import (
    CreatedTask,
    callback_event,
    seed_completed_task,
    simulated_body,
    unique,
)
from services.common.settings import Secret, Settings
from services.common.storage import LocalStorage
from services.console.app import create_app
from services.tracker.registry import Registry
from tests.archiver.support import callback_body

T = TypeVar("T")

__all__ = [
    "Console",
    "CreatedTask",
    "callback_event",
    "fixture_console",
    "simulated_body",
    "unique",
]


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
    )


@pytest.fixture(name="console")
def fixture_console(database_url: str, tmp_path: Path) -> Iterator[Console]:
    """The real console app (:func:`services.console.app.create_app`) on 127.0.0.1 and a
    free port, over the test's fresh database (migrated by the console at start-up) and a
    local storage in ``tmp_path / "data"``, served by a thread with its own event loop;
    stopped, and its resources released, after the test."""
    with running_console(console_settings(database_url, tmp_path / "data")) as console:
        yield console


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
