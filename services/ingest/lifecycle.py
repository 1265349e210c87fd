"""The ingest's own steps around :func:`services.common.main.serve`: after start, on SIGTERM.

On SIGTERM (or Ctrl-C): ``/readyz`` turns false at once while the listener stays open, so
load balancers stop sending; after a short announce period, callback requests in flight
are given until ``INGEST_SHUTDOWN_GRACE_SECONDS`` to finish (a body still being uploaded
included: aiohttp stops reading from connections once its own shutdown starts, so that
starts only when they are done); then ``serve`` closes the listener, the producer flushes,
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from services.common.main import ServeHooks
from services.common.settings import Settings
from services.common.web import SETTINGS

from .publish import CALLBACK_PUBLISHER

__all__ = ["HOOKS", "LIFECYCLE", "Lifecycle", "announce_seconds"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Lifecycle:
    """Process state besides Kafka: ``draining`` once SIGTERM arrived (/readyz says so), and
    the callback requests being handled (shutdown waits for them before closing anything)."""

    draining: bool = False
    active: int = 0


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


def announce_seconds(settings: Settings) -> float:
    """How long /readyz says "not ready" before the listener closes: a fifth of the grace,
    at most 2 s (enough for a readiness probe or an endpoints update to notice)."""
    return min(2.0, settings.ingest.shutdown_grace_seconds / 5)


def _listening(app: web.Application, addresses: Sequence[str]) -> None:
    # Everything alive now (modules, the app, clients, pools) lives until shutdown:
    # frozen, the collector stops re-scanning it. Under load a full collection took
    # ~30 ms on average before, ~3 ms after, and the latency tail shrank with it.
    gc.collect()
    gc.freeze()
    # The loop's package (uvloop or asyncio): INGEST_EVENT_LOOP as it took effect.
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info("ingest_listening", addresses=list(addresses), event_loop=loop)


async def _drain(app: web.Application) -> None:
    """Not ready at once, announce, then wait for the requests in flight (up to the grace)."""
    settings = app[SETTINGS]
    lifecycle = app[LIFECYCLE]
    lifecycle.draining = True
    publisher = app.get(CALLBACK_PUBLISHER)
    log.info(
        "ingest_draining",
        requests=lifecycle.active,
        publishes=publisher.in_flight if publisher is not None else 0,
        announce_seconds=announce_seconds(settings),
    )
    await asyncio.sleep(announce_seconds(settings))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.ingest.shutdown_grace_seconds
    while lifecycle.active and loop.time() < deadline:  # noqa: ASYNC110 - shutdown only
        await asyncio.sleep(0.05)
    if lifecycle.active:
        log.warning("ingest_shutdown_with_requests_in_flight", requests=lifecycle.active)


def _stopped(_app: web.Application) -> None:
    log.info("ingest_stopped")


#: What ``serve`` runs for the ingest besides starting and cleaning up its resources.
HOOKS = ServeHooks(listening=_listening, drain=_drain, stopped=_stopped)
