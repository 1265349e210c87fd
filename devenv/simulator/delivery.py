"""Callbacks sent the way the provider sends them: signed, 15 s per attempt, 3 in a row.

The provider POSTs JSON to ``callBackUrl`` exactly as given (query string kept), with
``X-Webhook-Timestamp`` and ``X-Webhook-Signature = base64(HMAC-SHA256(key, taskId + "." +
timestamp))`` when the account has a webhook key. An attempt fails on a non-2xx answer, a
timeout or a network error; after the last failed attempt in a row the provider gives up.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Final

import aiohttp
import structlog
from yarl import URL

from .results import callback_payload
from .state import Attempt, SimState, SimTask

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "run_task", "signature"]

TIMESTAMP_HEADER: Final = "X-Webhook-Timestamp"
SIGNATURE_HEADER: Final = "X-Webhook-Signature"

_log = structlog.get_logger("devenv.simulator")


def signature(key: bytes, task_id: str, timestamp: int) -> str:
    """The provider's webhook signature, written from its verification guide."""
    digest = hmac.new(key, f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


async def run_task(state: SimState, session: aiohttp.ClientSession, task: SimTask) -> None:
    """Let ``task`` run to its end, then deliver its callback as its fate says."""
    fate = task.fate
    await asyncio.sleep(fate.completion_seconds)
    task.completed_ms = state.now_ms()
    body = json.dumps(callback_payload(task.task_id, fate, task.midi_data)).encode()
    task.callback_body = body
    _log.info("task_completed", task_id=task.task_id, outcome=fate.outcome)
    plan = fate.callback
    if plan.mode == "drop":
        for number in range(1, state.config.callback_attempts + 1):
            task.attempts.append(Attempt(1, number, state.clock(), error="dropped"))
        return
    if plan.mode == "delay":
        await asyncio.sleep(plan.delay_seconds)
    await _deliver(state, session, task, body, delivery=1)
    if plan.mode == "twice":
        await asyncio.sleep(state.config.duplicate_gap_seconds)
        await _deliver(state, session, task, body, delivery=2)


async def _deliver(
    state: SimState, session: aiohttp.ClientSession, task: SimTask, body: bytes, *, delivery: int
) -> None:
    config = state.config
    for number in range(1, config.callback_attempts + 1):
        if number > 1:
            await asyncio.sleep(config.callback_retry_seconds)
        attempt = await _attempt(state, session, task, body, delivery, number)
        task.attempts.append(attempt)
        _log.info(
            "callback_attempt",
            task_id=task.task_id,
            delivery=delivery,
            attempt=number,
            status=attempt.status,
            error=attempt.error,
        )
        if attempt.ok:
            return
    _log.warning("callback_given_up", task_id=task.task_id, delivery=delivery)


async def _attempt(
    state: SimState,
    session: aiohttp.ClientSession,
    task: SimTask,
    body: bytes,
    delivery: int,
    number: int,
) -> Attempt:
    config = state.config
    sent = state.clock()
    headers = {"Content-Type": "application/json"}
    if config.webhook_key is not None:
        timestamp = int(sent)
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = signature(config.webhook_key, task.task_id, timestamp)
    timeout = aiohttp.ClientTimeout(total=config.callback_timeout_seconds)
    try:
        async with session.post(
            URL(task.callback_url, encoded=True), data=body, headers=headers, timeout=timeout
        ) as response:
            await response.read()
            return Attempt(delivery, number, sent, status=response.status)
    except TimeoutError:
        return Attempt(delivery, number, sent, error="timeout")
    except aiohttp.ClientError as exc:
        return Attempt(delivery, number, sent, error=f"{type(exc).__name__}: {exc}")
