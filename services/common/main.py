"""Entry-point plumbing shared by the services: settings, logging, serve until SIGTERM.

Whatever stops a service from starting (a bad setting, no broker, a port already taken)
ends the process with one line naming the program and what to fix, exit status 1, never
a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from .errors import ConfigError, PipelineError
from .logs import configure_logging
from .settings import EventLoop, Settings

__all__ = ["ServeHooks", "load_settings", "serve"]


@dataclass(frozen=True, slots=True)
class ServeHooks:
    """A service's own steps around :func:`serve`'s; its resources stay in ``cleanup_ctx``."""

    #: Once the listener is open, with the addresses it listens on.
    listening: Callable[[web.Application, Sequence[str]], None] | None = None
    #: After SIGTERM, before the listener closes: the ingest drains its requests here.
    drain: Callable[[web.Application], Awaitable[None]] | None = None
    #: Once every resource is released.
    stopped: Callable[[web.Application], None] | None = None


def load_settings(program: str) -> Settings:
    """Settings from the environment, or exit with a message naming the bad variable."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"{program}: configuration error: {exc}")


def serve(
    program: str,
    factory: Callable[[Settings], web.Application],
    address: Callable[[Settings], tuple[str, int]],
    *,
    shutdown_timeout: float = 10.0,
    keepalive_timeout: float = 75.0,
    hooks: ServeHooks | None = None,
    reuse_port: Callable[[Settings], bool] | None = None,
    event_loop: Callable[[Settings], EventLoop] | None = None,
) -> None:
    """Run ``factory(settings)`` on ``address(settings)``; SIGTERM drains and exits 0.

    ``shutdown_timeout`` is how long handlers still running when the listener closes get
    before the resources are released; ``keepalive_timeout`` how long an idle connection
    stays open (both default to ``aiohttp.web.run_app``'s values); ``reuse_port`` whether
    other processes may listen on the same port (SO_REUSEPORT); ``event_loop`` which loop
    runs it (asyncio's own without).
    """
    settings = load_settings(program)
    configure_logging(settings.log)
    try:
        app = factory(settings)
    except ConfigError as exc:  # a rule the service adds to the settings' own
        sys.exit(f"{program}: configuration error: {exc}")
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
    )
    try:
        shared = reuse_port is not None and reuse_port(settings)
        loop_factory = _loop_factory(event_loop(settings) if event_loop else "asyncio")
        with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
            loop_runner.run(_serve(runner, address(settings), shared, hooks or ServeHooks()))
    except PipelineError as exc:
        # Start-up failed (no broker, bad storage): say what, exit non-zero, no traceback.
        structlog.get_logger(program).error("startup_failed", error=str(exc))
        sys.exit(f"{program}: cannot start: {exc}")


def _loop_factory(name: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop ``name`` names; ``None``: asyncio's own (``asyncio.run``'s)."""
    if name == "uvloop":
        # Imported here: only a service that chooses it loads it.
        import uvloop

        return uvloop.new_event_loop
    return None


async def _serve(
    runner: web.AppRunner, address: tuple[str, int], reuse_port: bool, hooks: ServeHooks
) -> None:
    app = runner.app
    signals = _Signals()
    try:
        try:
            await runner.setup()
            await _listen(runner, *address, reuse_port=reuse_port)
        except asyncio.CancelledError:
            signals.uncancel()
            return  # stopped while starting: only what started is cleaned up
        signals.serving = True
        if hooks.listening is not None:
            hooks.listening(app, [str(bound) for bound in runner.addresses])
        await signals.received.wait()
        if hooks.drain is not None:
            await hooks.drain(app)
    finally:
        # Closes the listener, gives running handlers shutdown_timeout, then releases the
        # resources (cleanup_ctx) in reverse order; after a failed start-up, those started.
        await runner.cleanup()
    if hooks.stopped is not None:
        hooks.stopped(app)


async def _listen(runner: web.AppRunner, host: str, port: int, *, reuse_port: bool) -> None:
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(is another process using the port, and is the host an address of this machine?)"
        ) from exc


class _Signals:
    """SIGTERM and SIGINT: while starting, abandon the start; once serving, stop serving."""

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self.serving = False
        self.received = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)

    def _on_signal(self) -> None:
        if not self.serving and not self.received.is_set() and self._task is not None:
            self._task.cancel()
        self.received.set()

    def uncancel(self) -> None:
        if self._task is not None:
            self._task.uncancel()
