"""The ingest application factory and its request handler."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.callback import callback_code, callback_msg, callback_state, find_task_id
from services.common.errors import PublishError
from services.common.events import CallbackEvent, sha256_hex
from services.common.keys import MAX_TASK_ID_LENGTH, is_valid_task_id
from services.common.settings import Settings
from services.common.web import (
    PUBLISHER,
    READINESS,
    REGISTRY,
    SETTINGS,
    add_ops_routes,
    publisher_ctx,
)

from .errors import http_error

__all__ = ["CALLBACK_PATH", "create_app"]

log = structlog.get_logger(__name__)

CALLBACK_PATH = "/callbacks/suno/midi"

#: Request headers copied into the event (and the archive's sidecar). Never signatures.
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Webhook-Timestamp", "X-Request-Id")


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.ingest.max_body_bytes)
    app[SETTINGS] = settings
    app[REGISTRY] = registry or CollectorRegistry()
    app.cleanup_ctx.append(publisher_ctx("ingest", [settings.kafka.topics.callbacks]))

    async def ready() -> bool:
        publisher = app.get(PUBLISHER)
        if publisher is None or not publisher.started:
            return False
        try:
            return not await publisher.missing_topics([settings.kafka.topics.callbacks])
        except PublishError:
            return False

    app[READINESS] = ready
    add_ops_routes(app)
    app.router.add_post(CALLBACK_PATH, receive_callback)
    return app


async def receive_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    received_at = datetime.now(UTC)
    if request.content_type != "application/json":
        return http_error(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return http_error(
            413,
            "body_too_large",
            f"the body exceeds the limit of {settings.ingest.max_body_bytes} bytes",
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return http_error(400, "invalid_json", f"the body is not valid UTF-8 JSON: {exc}")
    if not isinstance(payload, dict):
        return http_error(400, "not_an_object", "the body must be a JSON object")
    task_id = find_task_id(payload)
    if task_id is None:
        return http_error(
            400,
            "missing_task_id",
            "no task id in task_id, taskId, data.taskId or data.task_id",
        )
    if not is_valid_task_id(task_id):
        return http_error(
            400,
            "invalid_task_id",
            f"the task id must be 1-{MAX_TASK_ID_LENGTH} printable ASCII characters",
        )
    event = build_event(payload, body, task_id, received_at, request.headers)
    structlog.contextvars.bind_contextvars(task_id=task_id, delivery_key=event.delivery_key)
    try:
        await request.app[PUBLISHER].publish(
            settings.kafka.topics.callbacks,
            key=task_id.encode(),
            value=event.encode(),
            timeout=settings.ingest.publish_timeout_seconds,
        )
    except PublishError as exc:
        log.error("publish_failed", error=str(exc))
        return http_error(
            503,
            "unavailable",
            "the callback could not be stored durably; retry later",
            headers={"Retry-After": str(settings.ingest.retry_after_seconds)},
        )
    log.info("callback_accepted", code=event.code, size=len(body))
    return web.json_response({"status": "received"})


def build_event(
    payload: dict[str, Any],
    body: bytes,
    task_id: str,
    received_at: datetime,
    headers: Mapping[str, str],
) -> CallbackEvent:
    return CallbackEvent(
        task_id=task_id,
        received_at=received_at,
        body=body,
        body_sha256=sha256_hex(body),
        code=callback_code(payload),
        msg=callback_msg(payload),
        state=callback_state(payload),
        signature="UNVERIFIED",
        headers={name: headers[name] for name in KEPT_HEADERS if name in headers},
    )
