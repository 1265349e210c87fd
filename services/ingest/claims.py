"""Claiming each delivery in the dedupe store around its publish, so one copy is published.

The store itself (``dedupe.py``) only answers; here its answers become the request's: a
duplicate, a wait for a concurrent twin, a 409 for a reused signature, a 503 when the twin
takes too long. A store that does not answer is counted and logged, and then
``INGEST_DEDUPE_UNAVAILABLE`` decides: ``accept`` publishes without dedupe or the
one-signature-one-body check (at least once: repeats reach Kafka again; downstream effects
are idempotent), ``refuse`` answers 503 with Retry-After so the provider sends it again later.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from services.common.errors import ConfigError
from services.common.settings import IngestSettings
from services.common.web import SETTINGS

from .dedupe import (
    Claim,
    ClaimResult,
    DedupeStore,
    DedupeUnavailable,
    Delivery,
    MemoryDedupeStore,
    RedisDedupeStore,
    binding_ttl,
)
from .errors import Refusal
from .metrics import INGEST_METRICS, IngestMetrics

__all__ = ["CLAIMS", "LEASE_MARGIN_SECONDS", "DeliveryClaims", "setup_dedupe"]

log = structlog.get_logger(__name__)

#: Extra lease beyond the publish timeout, so a live owner never loses its claim.
LEASE_MARGIN_SECONDS: Final = 5.0


class DeliveryClaims:
    """The dedupe store as the request path uses it."""

    def __init__(
        self, store: DedupeStore, settings: IngestSettings, metrics: IngestMetrics
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._lease = settings.publish_timeout_seconds + LEASE_MARGIN_SECONDS
        self._retry_after = {"Retry-After": str(settings.retry_after_seconds)}
        self._refuse = settings.dedupe_unavailable == "refuse"

    async def claim(self, delivery: Delivery, deadline: float) -> ClaimResult | None:
        """CLAIMED (with this request's lease token) or DUPLICATE; ``None`` when the store
        did not answer and the policy is to accept without it (else a 503 Refusal).

        A concurrent identical delivery finds the claim pending: it waits (polling, up to
        the publish timeout) for the owner's outcome rather than answering at once, so the
        sender hears "duplicate" only once the first copy is durable, and takes over when
        the owner released the claim. Still pending at ``deadline``: 503, retry later.
        """
        while True:
            try:
                result = await self._store.claim(delivery, lease_seconds=self._lease)
            except DedupeUnavailable as exc:
                self._unavailable("claim", exc)
                return None
            self._metrics.dedupe_backend_up.set(1)
            if result.claim in (Claim.CLAIMED, Claim.DUPLICATE):
                return result
            if result.claim is Claim.SIGNATURE_REUSED:
                raise Refusal(
                    409,
                    "signature_reused",
                    "this signature was already used with a different body; "
                    "a signature is accepted with one body only",
                    outcome="signature_reused",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Refusal(
                    503,
                    "delivery_in_progress",
                    "an identical delivery is being stored right now; retry later",
                    outcome="unavailable",
                    headers=self._retry_after,
                )
            try:
                await self._store.wait(delivery, within=remaining)
            except DedupeUnavailable as exc:
                self._unavailable("wait", exc)
                return None

    async def finish(self, delivery: Delivery, token: str, *, published: bool) -> None:
        """Record a published delivery, or release the claim so the sender's retry goes."""
        operation = "complete" if published else "release"
        try:
            if published:
                await self._store.complete(delivery, token)
            else:
                await self._store.release(delivery, token)
        except DedupeUnavailable as exc:
            self._failed(operation, exc)

    def _unavailable(self, operation: str, exc: Exception) -> None:
        """No answer before the publish: accept without dedupe, or refuse with 503."""
        self._failed(operation, exc)
        action = "refused" if self._refuse else "accepted"
        self._metrics.dedupe_unavailable.labels(action).inc()
        if self._refuse:
            raise Refusal(
                503,
                "dedupe_unavailable",
                "the dedupe store did not answer; retry later",
                outcome="unavailable",
                headers=self._retry_after,
            )
        log.warning("published_without_dedupe", operation=operation)

    def _failed(self, operation: str, exc: Exception) -> None:
        self._metrics.dedupe_errors.labels(operation).inc()
        self._metrics.dedupe_backend_up.set(0)
        log.error("dedupe_store_failed", operation=operation, error=str(exc))


CLAIMS = web.AppKey("claims", DeliveryClaims)


def setup_dedupe(app: web.Application) -> None:
    """Open the dedupe store with the app: Redis (of ``REDIS_MODE``'s topology) when
    ``REDIS_URL`` is set, else in process."""
    app.cleanup_ctx.append(_dedupe_store)


async def _dedupe_store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].ingest
    metrics = app[INGEST_METRICS]
    store = await _open_store(settings, metrics)
    app[CLAIMS] = DeliveryClaims(store, settings, metrics)
    try:
        yield
    finally:
        await store.close()


async def _open_store(settings: IngestSettings, metrics: IngestMetrics) -> DedupeStore:
    bind_seconds = binding_ttl(settings.signature_tolerance_seconds)
    if settings.redis_url is None:
        metrics.dedupe_backend_up.set(1)
        log.info("dedupe_store", backend="memory", note="single replica only; set REDIS_URL")
        return MemoryDedupeStore(
            window_seconds=settings.dedupe_window_seconds, binding_seconds=bind_seconds
        )
    try:
        store = RedisDedupeStore.from_url(
            settings.redis_url.get(),
            window_seconds=settings.dedupe_window_seconds,
            binding_seconds=bind_seconds,
            mode=settings.redis_mode,
            master=settings.redis_sentinel_master,
        )
    except ValueError as exc:  # the URL does not suit the mode (no message carries a password)
        raise ConfigError(f"REDIS_URL is not a usable Redis URL: {exc}") from exc
    try:
        await store.ping()
        metrics.dedupe_backend_up.set(1)
        log.info("dedupe_store", backend="redis", mode=settings.redis_mode)
    except DedupeUnavailable as exc:
        # Start anyway, and say so loudly: each claim tries again, and while Redis stays
        # away INGEST_DEDUPE_UNAVAILABLE decides what a callback gets.
        metrics.dedupe_backend_up.set(0)
        metrics.dedupe_errors.labels("ping").inc()
        log.error(
            "dedupe_store_unavailable",
            backend="redis",
            mode=settings.redis_mode,
            policy=settings.dedupe_unavailable,
            error=str(exc),
        )
    return store
