"""Turning a recorded request into exactly one provider task, or an outcome we can name.

The provider has no idempotency key, so the only safe order is: record the intent, claim
it (one claimant ever), call ``generate``, record the answer. A crash between the answer
and our write leaves an intent whose outcome nobody knows; it is never resubmitted on our
own: the orphan task's callback names its request (``request_id`` in the callback URL) and
heals it, or an operator decides (``tracker_submissions_unknown`` and its alert).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiohttp import web

from services.common.errors import (
    OutcomeUnknownError,
    ProviderPermanentError,
    ProviderRetryableError,
    RegistryUnavailableError,
)

from .metrics import SubmitOutcome
from .provider import ProviderClient
from .registry import Registry, Task
from .schedule import callback_url

__all__ = ["WAKE_SUBMITTER", "SubmitResult", "submit_request"]

log = structlog.get_logger(__name__)

#: Set when a request is recorded, so the submitter does not wait for its next round.
WAKE_SUBMITTER = web.AppKey("wake_submitter", asyncio.Event)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    outcome: SubmitOutcome
    task_id: str | None = None
    reason: str | None = None


async def submit_request(
    registry: Registry,
    client: ProviderClient,
    request_id: str,
    *,
    owner: str,
    callback_base: str,
    poll_after_seconds: int,
) -> SubmitResult:
    """Submit the recorded request ``request_id`` once.

    ``not_claimed``: another replica (or an earlier attempt) has it. ``deferred``: the
    provider certainly created nothing (rate limit, maintenance, unreachable): the intent
    is released and tried again later. ``rejected``: a permanent error, the task failed.
    ``unknown``: we cannot know whether a task exists; never resubmitted on our own.
    """
    claimed = await registry.claim_submission(request_id, owner)
    if claimed is None:
        return SubmitResult("not_claimed")
    url = callback_url(callback_base, request_id)
    try:
        task_id = await client.generate(claimed.source_task_id or "", url, claimed.audio_id)
    except ProviderPermanentError as exc:
        await registry.submission_rejected(request_id, str(exc))
        log.warning("submission_rejected", request_id=request_id, error=str(exc))
        return SubmitResult("rejected", reason=str(exc))
    except OutcomeUnknownError as exc:
        await registry.submission_unknown(request_id, str(exc))
        log.error("submission_outcome_unknown", request_id=request_id, error=str(exc))
        return SubmitResult("unknown", reason=str(exc))
    except ProviderRetryableError as exc:
        await registry.release_submission(request_id)
        log.warning("submission_deferred", request_id=request_id, error=str(exc))
        return SubmitResult("deferred", reason=str(exc))
    task = await _record_answer(
        registry, request_id, task_id, timedelta(seconds=poll_after_seconds)
    )
    log.info("task_submitted", request_id=request_id, task_id=task.task_id)
    return SubmitResult("submitted", task_id=task_id)


#: Backoff of the answer's write while PostgreSQL is away: first and longest pause.
_WRITE_RETRY_SECONDS = (0.2, 5.0)


async def _record_answer(
    registry: Registry, request_id: str, task_id: str, first_poll_after: timedelta
) -> Task:
    """Write the provider's answer, waiting out a registry outage: until it is written the
    task id lives only in this process, and giving up would turn a known task into an
    unknown outcome (for an operator, if its callback is lost too)."""
    pause, longest = _WRITE_RETRY_SECONDS
    while True:
        try:
            return await registry.submitted(request_id, task_id, first_poll_at=first_poll_after)
        except RegistryUnavailableError as exc:
            log.warning(
                "submission_write_retry", request_id=request_id, task_id=task_id, error=str(exc)
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)
