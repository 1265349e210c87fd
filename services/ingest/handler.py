"""One callback from request to answer, each step a method; refusals answered in one place.

``verify`` (signature headers, before reading) -> ``body`` (type, size, buffer budget, UTF-8,
depth, JSON, task id) -> ``verify`` (signature, clock) -> ``claims`` (claim the delivery,
bind the signature to the body) -> ``publish`` (bounded, Kafka ``acks=all``) -> 200. Every
refusal is a :class:`Refusal` turned into a JSON answer and counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Final

import structlog
from aiohttp import web

from services.common.errors import ConfigError
from services.common.events import CallbackEvent
from services.common.keys import REQUEST_ID_PARAM, REQUEST_ID_RULE, is_valid_request_id
from services.common.settings import IngestSettings
from services.common.web import SETTINGS

from . import body as bodies
from .body import ParsedCallback
from .budget import BUFFER_BUDGET, BufferBudget, Hold
from .claims import CLAIMS, DeliveryClaims
from .dedupe import Claim, Delivery
from .errors import Refusal, http_error
from .event import build_event
from .lifecycle import LIFECYCLE
from .metrics import INGEST_METRICS, IngestMetrics, Outcome
from .publish import CALLBACK_PUBLISHER, CallbackPublisher
from .verify import SignatureRefused, Signed, check_headers, verify_signature

__all__ = [
    "CLOCK",
    "INGEST",
    "NO_KEYS",
    "Ingest",
    "receive_callback",
    "setup_handler",
    "webhook_keys",
]

log = structlog.get_logger(__name__)

#: The wall clock signatures are checked against (tests pin it).
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")

_RECEIVED: Final = b'{"status": "received"}'
_DUPLICATE: Final = b'{"status": "duplicate"}'


class Ingest:
    """One callback from request to answer."""

    def __init__(
        self,
        *,
        settings: IngestSettings,
        keys: tuple[bytes, ...],
        claims: DeliveryClaims,
        publisher: CallbackPublisher,
        metrics: IngestMetrics,
        clock: Callable[[], float],
        budget: BufferBudget,
    ) -> None:
        self._settings = settings
        self._budget = budget
        self._keys = keys
        self._claims = claims
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        outcome: Outcome
        hold = Hold(self._budget)
        try:
            response, outcome = await self._process(request, hold)
        except Refusal as refusal:
            response, outcome = refusal.response(), refusal.outcome
            log.info("callback_refused", outcome=outcome, code=refusal.code)
        finally:
            hold.release()
        self._metrics.answered(outcome, time.perf_counter() - started)
        return response

    async def _process(self, request: web.Request, hold: Hold) -> tuple[web.Response, Outcome]:
        received_at = datetime.now(UTC)
        body = await self._read(request, hold)
        callback = bodies.parse_callback(body, max_depth=self._settings.max_json_depth)
        structlog.contextvars.bind_contextvars(task_id=callback.task_id)
        signed = self._verify(request.headers, callback)
        event = build_event(
            callback,
            body,
            received_at,
            request.headers,
            signature="VERIFIED" if signed is not None else "UNVERIFIED",
            request_id=_request_id(request),
        )
        structlog.contextvars.bind_contextvars(delivery_key=event.delivery_key)
        binding = (signed.timestamp, signed.signature) if signed is not None else None
        delivery = Delivery(event.task_id, event.body_sha256, binding)
        kind = callback.kind
        # Its msg or state may be as large as the body: not kept across the waits below.
        del callback
        # One budget for waiting on a concurrent twin and for Kafka's acknowledgement
        # together, so the answer comes within publish_timeout_seconds, whatever happened.
        deadline = time.monotonic() + self._settings.publish_timeout_seconds
        claimed = await self._claims.claim(delivery, deadline)
        if claimed is not None and claimed.claim is Claim.DUPLICATE:
            log.info("callback_duplicate")
            return _json(_DUPLICATE), "duplicate"
        token = claimed.token if claimed is not None else None
        await self._store(event, delivery, token, deadline, hold)
        self._metrics.last_accepted.set(time.time())
        self._metrics.callbacks_by_kind.labels(kind).inc()
        log.info(
            "callback_accepted",
            code=event.code,
            kind=kind,
            size=len(body),
            signature=event.signature,
        )
        return _json(_RECEIVED), "accepted"

    async def _read(self, request: web.Request, hold: Hold) -> bytearray:
        """The whole body of a JSON request, within the size, time and buffer limits.

        Signature headers that are missing, malformed or stale are refused before a byte of
        the body is read: a forged request costs no buffer.
        """
        bodies.require_json(request)
        refused = check_headers(
            request.headers,
            keys=self._keys,
            now=int(self._clock()),
            tolerance=self._settings.signature_tolerance_seconds,
        )
        if refused is not None:
            raise _refusal(refused)
        body = await bodies.read_body(
            request, self._settings.max_body_bytes, self._settings.body_timeout_seconds, hold
        )
        self._metrics.body_size.observe(len(body))
        return body

    def _verify(self, headers: Mapping[str, str], callback: ParsedCallback) -> Signed | None:
        """The checked signature, ``None`` when no key is configured; 401 when it fails."""
        verdict = verify_signature(
            headers,
            callback.task_id,
            keys=self._keys,
            now=int(self._clock()),
            tolerance=self._settings.signature_tolerance_seconds,
        )
        if isinstance(verdict, SignatureRefused):
            raise _refusal(verdict)
        return verdict if isinstance(verdict, Signed) else None

    async def _store(
        self,
        event: CallbackEvent,
        delivery: Delivery,
        token: str | None,
        deadline: float,
        hold: Hold,
    ) -> None:
        """Publish the event, then complete the claim, or release it when Kafka failed."""
        published = False
        try:
            await self._publisher.publish_in_slot(event, deadline=deadline, hold=hold)
            published = True
        except Refusal as refusal:
            log.error("callback_not_stored", outcome=refusal.outcome, error=str(refusal.__cause__))
            raise
        finally:
            if token is not None:
                # Shielded: a cancelled request must still record or release its claim.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._claims.finish(delivery, token, published=published))


INGEST = web.AppKey("ingest", Ingest)


def _refusal(verdict: SignatureRefused) -> Refusal:
    return Refusal(
        401,
        verdict.code,
        verdict.message,
        outcome="stale_timestamp" if verdict.stale else "bad_signature",
    )


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


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


def setup_handler(app: web.Application) -> None:
    """Build the request path once the publisher and the dedupe store exist.

    The keys are checked at once: without any (and without the opt-in) the app is not
    built, before it reaches for Kafka or Redis.
    """
    keys = webhook_keys(app[SETTINGS].ingest)

    async def handler_ctx(app: web.Application) -> AsyncIterator[None]:
        app[INGEST] = Ingest(
            settings=app[SETTINGS].ingest,
            keys=keys,
            claims=app[CLAIMS],
            publisher=app[CALLBACK_PUBLISHER],
            metrics=app[INGEST_METRICS],
            clock=app[CLOCK],
            budget=app[BUFFER_BUDGET],
        )
        yield

    app.cleanup_ctx.append(handler_ctx)


#: What the ingest says when it has no key and no opt-in: what to set, either way.
NO_KEYS: Final = (
    "SUNO_WEBHOOK_SECRETS is empty (blank values count as none): set it to the provider's "
    "webhook HMAC key(s), comma-separated; or, for local use only, set "
    "INGEST_ALLOW_UNSIGNED=true to accept unsigned callbacks"
)


def webhook_keys(settings: IngestSettings) -> tuple[bytes, ...]:
    """The provider's keys; with none, refuse (:class:`ConfigError`) unless the opt-in
    ``INGEST_ALLOW_UNSIGNED`` says to accept unsigned callbacks, and say so loudly."""
    keys = tuple(s.get().strip().encode() for s in settings.webhook_secrets if s.get().strip())
    if keys:
        log.info("webhook_signatures_enabled", keys=len(keys))
    elif settings.allow_unsigned:
        log.warning(
            "webhook_signatures_disabled",
            message="SUNO_WEBHOOK_SECRETS is empty and INGEST_ALLOW_UNSIGNED=true: unsigned "
            "callbacks are ACCEPTED and their events marked UNVERIFIED. Local use only.",
        )
    else:
        raise ConfigError(NO_KEYS)
    return keys


def _request_id(request: web.Request) -> str | None:
    """The request id the tracker put in the callback URL, if well formed. A malformed one
    is dropped, never refused: the body is the provider's result, and refusing it loses it."""
    value = request.query.get(REQUEST_ID_PARAM)
    if value is None or is_valid_request_id(value):
        return value
    log.warning("request_id_ignored", rule=REQUEST_ID_RULE, length=len(value))
    return None
