"""The ingest application: factory, resources, and the callback request's path.

The path of one callback, each step its own module:
``body`` (type, size, UTF-8, depth, JSON, task id) -> ``verify`` (signature, clock) ->
``dedupe`` (claim the delivery, bind the signature to the body) -> ``publish`` (bounded,
Kafka ``acks=all``) -> 200. Every refusal is a :class:`Refusal` turned into a JSON answer
and counted here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from services.common.errors import PipelineError
from services.common.settings import Settings
from services.common.web import (
    PUBLISHER,
    READINESS,
    REGISTRY,
    SETTINGS,
    add_ops_routes,
    publisher_ctx,
)

from . import body as bodies
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
from .errors import Refusal, http_error
from .event import build_event
from .metrics import IngestMetrics, Outcome
from .publish import CallbackPublisher
from .verify import SignatureRefused, Signed, verify_signature

__all__ = [
    "CALLBACK_PATH",
    "CLOCK",
    "DEDUPE",
    "INGEST",
    "INGEST_METRICS",
    "LIFECYCLE",
    "Ingest",
    "Lifecycle",
    "create_app",
]

log = structlog.get_logger(__name__)

CALLBACK_PATH: Final = "/callbacks/suno/midi"

#: Extra lease beyond the publish timeout, so a live owner never loses its claim.
LEASE_MARGIN_SECONDS: Final = 5.0

_RECEIVED: Final = b'{"status": "received"}'
_DUPLICATE: Final = b'{"status": "duplicate"}'


@dataclass(slots=True)
class Lifecycle:
    """Process state besides Kafka: ``draining`` once SIGTERM arrived (/readyz says so), and
    the callback requests being handled (shutdown waits for them before closing anything)."""

    draining: bool = False
    active: int = 0


INGEST_METRICS = web.AppKey("ingest_metrics", IngestMetrics)
DEDUPE = web.AppKey("dedupe", DedupeStore)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The ingest as an aiohttp application; ``clock`` is the wall clock signatures use."""
    app = web.Application(
        client_max_size=settings.ingest.max_body_bytes,
        middlewares=[json_errors],
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or CollectorRegistry()
    app[INGEST_METRICS] = IngestMetrics(app[REGISTRY])
    app[LIFECYCLE] = Lifecycle()
    app[CLOCK] = clock
    app.cleanup_ctx.append(
        publisher_ctx(
            "ingest",
            [settings.kafka.topics.callbacks],
            # The producer flushes within the shutdown grace; what it cannot flush was
            # never acknowledged (its sender got a 503 and retries).
            flush_timeout=settings.ingest.shutdown_grace_seconds,
        )
    )
    app.cleanup_ctx.append(dedupe_ctx)
    app.cleanup_ctx.append(ingest_ctx)
    app[READINESS] = readiness(app)
    add_ops_routes(app)
    app.router.add_post(CALLBACK_PATH, receive_callback)
    return app


def readiness(app: web.Application) -> Callable[[], Awaitable[bool]]:
    """Ready = not draining, producer connected, callbacks topic present."""

    async def ready() -> bool:
        metrics = app[INGEST_METRICS]
        publisher = app.get(PUBLISHER)
        kafka_ok = False
        if publisher is not None and publisher.started:
            try:
                missing = await publisher.missing_topics([app[SETTINGS].kafka.topics.callbacks])
                kafka_ok = not missing
            except PipelineError:
                kafka_ok = False
        metrics.kafka_ready.set(1 if kafka_ok else 0)
        return kafka_ok and not app[LIFECYCLE].draining

    return ready


# --------------------------------------------------------------------------- resources


async def dedupe_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the dedupe store: Redis when ``REDIS_URL`` is set, else in process."""
    ingest = app[SETTINGS].ingest
    metrics = app[INGEST_METRICS]
    bind_seconds = binding_ttl(ingest.signature_tolerance_seconds)
    store: DedupeStore
    if ingest.redis_url is not None:
        store = RedisDedupeStore.from_url(
            ingest.redis_url.get(),
            window_seconds=ingest.dedupe_window_seconds,
            binding_seconds=bind_seconds,
        )
        try:
            await store.ping()
            metrics.dedupe_backend_up.set(1)
            log.info("dedupe_store", backend="redis")
        except DedupeUnavailable as exc:
            # Keep accepting: downstream effects are idempotent. Say so loudly.
            metrics.dedupe_backend_up.set(0)
            metrics.dedupe_errors.labels("ping").inc()
            log.error("dedupe_store_unavailable", backend="redis", error=str(exc))
    else:
        store = MemoryDedupeStore(
            window_seconds=ingest.dedupe_window_seconds, binding_seconds=bind_seconds
        )
        metrics.dedupe_backend_up.set(1)
        log.info("dedupe_store", backend="memory", note="single replica only; set REDIS_URL")
    app[DEDUPE] = store
    try:
        yield
    finally:
        await store.close()


async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build the request path once the publisher and the dedupe store exist."""
    settings = app[SETTINGS]
    metrics = app[INGEST_METRICS]
    keys = tuple(secret.get().encode() for secret in settings.ingest.webhook_secrets)
    if not keys:
        log.warning(
            "webhook_signatures_disabled",
            message="SUNO_WEBHOOK_SECRETS is empty: unsigned callbacks are ACCEPTED and "
            "their events marked UNVERIFIED. Configure the provider's webhook key(s).",
        )
    else:
        log.info("webhook_signatures_enabled", keys=len(keys))
    publisher = CallbackPublisher(
        app[PUBLISHER], settings.kafka.topics.callbacks, settings.ingest, metrics
    )
    app[INGEST] = Ingest(
        settings=settings,
        keys=keys,
        dedupe=app[DEDUPE],
        publisher=publisher,
        metrics=metrics,
        clock=app[CLOCK],
    )
    yield


# --------------------------------------------------------------------------- the request


class Ingest:
    """One callback from request to answer."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: tuple[bytes, ...],
        dedupe: DedupeStore,
        publisher: CallbackPublisher,
        metrics: IngestMetrics,
        clock: Callable[[], float],
    ) -> None:
        self._ingest = settings.ingest
        self._keys = keys
        self._dedupe = dedupe
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._lease = settings.ingest.publish_timeout_seconds + LEASE_MARGIN_SECONDS
        self._retry_after = {"Retry-After": str(settings.ingest.retry_after_seconds)}

    @property
    def publisher(self) -> CallbackPublisher:
        return self._publisher

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        outcome: Outcome
        try:
            response, outcome = await self._process(request)
        except Refusal as refusal:
            response, outcome = refusal.response(), refusal.outcome
            log.info("callback_refused", outcome=outcome, code=refusal.code)
        self._metrics.answered(outcome, time.perf_counter() - started)
        return response

    async def _process(self, request: web.Request) -> tuple[web.Response, Outcome]:
        received_at = datetime.now(UTC)
        bodies.require_json(request)
        body = await bodies.read_body(
            request, self._ingest.max_body_bytes, self._ingest.body_timeout_seconds
        )
        self._metrics.body_size.observe(len(body))
        callback = bodies.parse_callback(body, max_depth=self._ingest.max_json_depth)
        structlog.contextvars.bind_contextvars(task_id=callback.task_id)
        verdict = verify_signature(
            request.headers,
            callback.task_id,
            keys=self._keys,
            now=int(self._clock()),
            tolerance=self._ingest.signature_tolerance_seconds,
        )
        if isinstance(verdict, SignatureRefused):
            raise Refusal(
                401,
                verdict.code,
                verdict.message,
                outcome="stale_timestamp" if verdict.stale else "bad_signature",
            )
        signed = isinstance(verdict, Signed)
        event = build_event(
            callback,
            body,
            received_at,
            request.headers,
            signature="VERIFIED" if signed else "UNVERIFIED",
        )
        structlog.contextvars.bind_contextvars(delivery_key=event.delivery_key)
        delivery = Delivery(
            callback.task_id,
            event.body_sha256,
            (verdict.timestamp, verdict.signature) if isinstance(verdict, Signed) else None,
        )
        # One budget for waiting on a concurrent twin and for Kafka's acknowledgement
        # together, so the answer comes within publish_timeout_seconds, whatever happened.
        deadline = time.monotonic() + self._ingest.publish_timeout_seconds
        claimed = await self._claim(delivery, deadline)
        if claimed is not None and claimed.claim is Claim.DUPLICATE:
            log.info("callback_duplicate")
            return _json(_DUPLICATE), "duplicate"
        token = claimed.token if claimed is not None else None
        published = False
        try:
            self._publisher.reserve()
            try:
                await self._publisher.publish(event, deadline=deadline)
            finally:
                self._publisher.free()
            published = True
        except Refusal as refusal:
            log.error("callback_not_stored", outcome=refusal.outcome, error=str(refusal.__cause__))
            raise
        finally:
            if token is not None:
                # Shielded: a cancelled request must still record or release its claim.
                with contextlib.suppress(Exception):
                    await _shielded(self._finish(delivery, token, published))
        self._metrics.last_accepted.set(time.time())
        log.info("callback_accepted", code=event.code, size=len(body), signature=event.signature)
        return _json(_RECEIVED), "accepted"

    async def _claim(self, delivery: Delivery, deadline: float) -> ClaimResult | None:
        """CLAIMED (with this request's lease token) or DUPLICATE; ``None`` without a store.

        A concurrent identical delivery finds the claim pending: it waits (polling, up to
        the publish timeout) for the owner's outcome rather than answering at once, so the
        sender hears "duplicate" only once the first copy is durable, and takes over when
        the owner released the claim. Still pending at ``deadline``: 503, retry later.
        """
        while True:
            try:
                result = await self._dedupe.claim(delivery, lease_seconds=self._lease)
            except DedupeUnavailable as exc:
                self._dedupe_failed("claim", exc)
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
                await self._dedupe.wait(delivery, within=remaining)
            except DedupeUnavailable as exc:
                self._dedupe_failed("wait", exc)
                return None

    async def _finish(self, delivery: Delivery, token: str, published: bool) -> None:
        operation = "complete" if published else "release"
        try:
            if published:
                await self._dedupe.complete(delivery, token)
            else:
                await self._dedupe.release(delivery, token)
        except DedupeUnavailable as exc:
            self._dedupe_failed(operation, exc)

    def _dedupe_failed(self, operation: str, exc: Exception) -> None:
        self._metrics.dedupe_errors.labels(operation).inc()
        self._metrics.dedupe_backend_up.set(0)
        log.error("dedupe_store_failed", operation=operation, error=str(exc))


INGEST = web.AppKey("ingest", Ingest)


async def _shielded(awaitable: Awaitable[None]) -> None:
    await asyncio.shield(awaitable)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def receive_callback(request: web.Request) -> web.Response:
    ingest = request.app.get(INGEST)
    if ingest is None:  # pragma: no cover - routes are served only after start-up
        return http_error(503, "starting", "the service is starting; retry later")
    lifecycle = request.app[LIFECYCLE]
    lifecycle.active += 1
    try:
        return await ingest.handle(request)
    finally:
        lifecycle.active -= 1


# --------------------------------------------------------------------------- middleware

_HTTP_CODES: Final = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error aiohttp raises answers as JSON; anything unexpected is logged, not leaked."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 404:
            message = f"no such endpoint: {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow')}"
        return http_error(exc.status, code, message, headers=headers)
    except Exception:
        # Last resort only: every known bad input has its own answer above this line.
        log.exception("unexpected_error", method=request.method, path=request.path)
        return http_error(500, "internal_error", "an unexpected error occurred; it was logged")
