"""The tracker's client of the Suno API: ``generate`` and ``record-info``, each provider code
mapped to one error, retries that never risk a second task, the shared rate limit, metrics.

The provider states its code in the body's ``code`` as well as (or instead of) the HTTP
status, so an HTTP 200 whose body says 429 is a rate limit: the body's code wins when it
is not a success. ``generate`` is not idempotent (the provider takes no idempotency key):
it is retried only where the provider certainly created nothing (a 429, 430 or 455
answer, a connection never made); anything else that leaves its effect in doubt raises
:class:`OutcomeUnknownError` at once. ``record-info`` is a GET and retries every
retryable error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import aiohttp
import msgspec
import structlog

from services.common.callback import as_code, as_text, first_task_id
from services.common.errors import (
    ConfigError,
    InsufficientCreditsError,
    MaintenanceError,
    OutcomeUnknownError,
    PayloadTooLargeError,
    ProviderAnswerError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderNetworkError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderRetryableError,
    ProviderServerError,
    RateLimitedError,
)
from services.common.settings import TrackerSettings
from services.tracker.metrics import ProviderEndpoint, ProviderMetrics, ProviderOutcome

__all__ = [
    "GENERATE_PATH",
    "RECORD_INFO_PATH",
    "Limiter",
    "ProviderClient",
    "RecordInfo",
    "RecordOutcome",
    "retry_after_seconds",
]

log = structlog.get_logger(__name__)

GENERATE_PATH: Final = "/api/v1/midi/generate"
RECORD_INFO_PATH: Final = "/api/v1/midi/record-info"

#: ``successFlag``: 0 pending, 1 success, 2 task creation failed, 3 MIDI generation failed.
PENDING, SUCCESS, CREATE_FAILED, GENERATION_FAILED = 0, 1, 2, 3

#: The longest provider message copied into an error's text.
_MSG_CHARS = 200

RecordOutcome = Literal["pending", "completed", "empty", "failed"]

_T = TypeVar("_T")

#: The slot of a client without a rate limit: no wait.
_NO_LIMIT: Final = contextlib.nullcontext(0.0)


class Limiter(Protocol):
    """The provider's rate limit, shared by every replica (None: no limit)."""

    def slot(self) -> AbstractAsyncContextManager[float]:
        """Hold one request's place in the limit: entered once it may go (yielding the
        seconds waited), left once its answer is in."""
        ...


@dataclass(frozen=True)
class RecordInfo:
    """One ``record-info`` answer: the facts the tracker decides on, and the exact bytes.

    ``body`` is kept as received, never re-serialized: a recovered result enters the
    pipeline as a callback event whose bytes the archiver keeps forever.
    """

    body: bytes = field(repr=False)
    task_id: str
    success_flag: int
    midi_state: str | None
    note_count: int
    error_code: int | None
    error_message: str | None
    create_time: datetime | None
    complete_time: datetime | None

    @property
    def outcome(self) -> RecordOutcome:
        """A success without notes is ``empty``: the provider documents it after a
        ``split_stem`` separation, and no MIDI file can be made from it."""
        if self.success_flag == PENDING:
            return "pending"
        if self.success_flag != SUCCESS:
            return "failed"
        return "completed" if self.note_count else "empty"


class _Envelope(msgspec.Struct):
    """Every answer's frame; ``data`` is read by the endpoint's own reader."""

    code: Any = None
    msg: Any = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _Created(msgspec.Struct):
    taskId: Any = None
    task_id: Any = None


class _Instrument(msgspec.Struct):
    notes: list[msgspec.Raw] | None = None


class _MidiData(msgspec.Struct):
    state: Any = None
    instruments: list[_Instrument] | None = None


class _Record(msgspec.Struct):
    """``record-info``'s ``data``: scalars as ``Any`` (numbers come as strings too), the
    structure checked, every member optional."""

    taskId: Any = None
    task_id: Any = None
    successFlag: Any = None
    midiData: _MidiData | None = None
    errorCode: Any = None
    errorMessage: Any = None
    createTime: Any = None
    completeTime: Any = None


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: float | None


@dataclass(frozen=True)
class _Call(Generic[_T]):
    """One provider call: its request, how to read a success, whether it creates."""

    endpoint: ProviderEndpoint
    method: str
    path: str
    read: Callable[[_Envelope, bytes], _T]
    #: Creates a task: never retried where the provider may have acted.
    creates: bool
    params: Mapping[str, str] | None = None
    json: Mapping[str, str] | None = None


class ProviderClient:
    """Calls the provider with retries and the shared rate limit; raises ProviderError
    subclasses only (third-party errors are converted here)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: TrackerSettings,
        *,
        limiter: Limiter | None,
        metrics: ProviderMetrics,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if settings.api_key is None:
            raise ConfigError(
                "SUNO_API_KEY is not set: the tracker needs the provider's API key "
                "to submit and poll tasks"
            )
        self._session = session
        self._settings = settings
        self._limiter = limiter
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._base = settings.api_base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {settings.api_key.get()}",
            "Accept": "application/json",
        }
        #: A connection (TLS included) not made within half the budget is given up as
        #: such, which any call may retry: no request left us.
        self._timeout = aiohttp.ClientTimeout(
            total=settings.api_timeout_seconds,
            sock_connect=settings.api_timeout_seconds / 2,
        )

    async def generate(
        self, source_task_id: str, callback_url: str, audio_id: str | None = None
    ) -> str:
        """Ask for MIDI from the separation ``source_task_id``; the new MIDI task's id.

        Raises :class:`OutcomeUnknownError` when the provider may have created a task
        without our learning its id: do not call again for the same request.
        """
        payload = {"taskId": source_task_id, "callBackUrl": callback_url}
        if audio_id is not None:
            payload["audioId"] = audio_id
        call = _Call("generate", "POST", GENERATE_PATH, _read_created, creates=True, json=payload)
        return await self._call(call)

    async def record_info(self, task_id: str) -> RecordInfo:
        """The provider's record of the MIDI task ``task_id`` (see :class:`RecordInfo`)."""

        def read(envelope: _Envelope, body: bytes) -> RecordInfo:
            return _read_record(envelope, body, task_id)

        call = _Call(
            "record_info", "GET", RECORD_INFO_PATH, read, creates=False, params={"taskId": task_id}
        )
        return await self._call(call)

    async def _call(self, call: _Call[_T]) -> _T:
        """Attempts ``call`` until it succeeds, fails for good, or runs out of attempts."""
        attempt = 1
        while True:
            try:
                return await self._attempt(call, attempt)
            except ProviderRetryableError as exc:
                if attempt >= self._settings.api_max_attempts:
                    raise
                delay = self._delay(attempt, exc.retry_after)
                if delay is None:
                    raise
                log.warning(
                    "provider_retry",
                    endpoint=call.endpoint,
                    attempt=attempt,
                    code=exc.code,
                    error=type(exc).__name__,
                    delay_seconds=round(delay, 3),
                )
                await self._sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before attempt ``attempt + 1``: the provider's ``Retry-After`` when it
        said (None when that is beyond the longest delay we wait: the caller schedules),
        else full jitter, uniform(0, min(max, base * 2**(attempt - 1)))."""
        longest = self._settings.api_backoff_max_seconds
        if retry_after is not None:
            return retry_after if retry_after <= longest else None
        ceiling = self._settings.api_backoff_seconds * 2.0 ** min(attempt - 1, 64)
        return self._rng.uniform(0.0, min(longest, ceiling))

    async def _attempt(self, call: _Call[_T], attempt: int) -> _T:
        """One HTTP request: a rate-limit slot, the request, its reading; counted by
        outcome and timed (the wait excluded)."""
        slot = self._limiter.slot() if self._limiter is not None else _NO_LIMIT
        started = time.perf_counter()
        try:
            async with slot as waited:
                self._metrics.rate_limit_wait.observe(waited)
                started = time.perf_counter()
                answer = await self._send(call, attempt)
            result = self._read(call, attempt, answer)
        except ProviderError as exc:
            self._metrics.requests.labels(call.endpoint, _outcome_label(exc)).inc()
            raise
        finally:
            self._metrics.duration.labels(call.endpoint).observe(time.perf_counter() - started)
        self._metrics.requests.labels(call.endpoint, "ok").inc()
        return result

    async def _send(self, call: _Call[Any], attempt: int) -> _Answer:
        """The request on the wire; network failures converted to our errors.

        A connection never made is safe to retry for any call. Any later failure (a
        timeout, a dropped connection) may come after the provider read the request: for
        ``generate`` its outcome is unknown. A connection is given half the request's
        time, so that a slow connect is told apart from a slow answer.
        """
        try:
            async with self._session.request(
                call.method,
                self._base + call.path,
                params=call.params,
                json=call.json,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                header = response.headers.get("Retry-After")
                return _Answer(response.status, body, retry_after_seconds(header))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ProviderNetworkError(
                f"could not connect to the provider: {exc}",
                endpoint=call.endpoint,
                attempts=attempt,
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = (
                f"no answer within SUNO_API_TIMEOUT_SECONDS ({self._timeout.total} s)"
                if isinstance(exc, TimeoutError)
                else f"the connection failed before a complete answer ({exc})"
            )
            unsure = OutcomeUnknownError if call.creates else ProviderNetworkError
            raise unsure(what, endpoint=call.endpoint, attempts=attempt) from exc

    def _read(self, call: _Call[_T], attempt: int, answer: _Answer) -> _T:
        """The call's result from a success; the error the provider's code maps to
        otherwise (for ``generate``, anything but a clear refusal leaves its outcome
        unknown)."""
        envelope = _envelope(answer.body)
        msg = as_text(envelope.msg) if envelope else None
        code = _effective_code(answer.status, as_code(envelope.code) if envelope else None)
        error = _error_class(code, msg)
        if call.creates and error is not None and not issubclass(error, _SAFE_TO_RESEND):
            error = OutcomeUnknownError
        said = f"the provider answered {code}" + (f": {msg[:_MSG_CHARS]!r}" if msg else "")
        if error is not None and issubclass(error, ProviderRetryableError):
            raise error(
                said,
                endpoint=call.endpoint,
                attempts=attempt,
                code=code,
                retry_after=answer.retry_after,
            )
        if error is not None:
            raise error(said, endpoint=call.endpoint, attempts=attempt, code=code)
        try:
            if envelope is None:
                raise ValueError("the body is not a JSON object")
            return call.read(envelope, answer.body)
        except ValueError as exc:
            unreadable = OutcomeUnknownError if call.creates else ProviderAnswerError
            raise unreadable(
                f"unreadable success answer: {exc}",
                endpoint=call.endpoint,
                attempts=attempt,
                code=code,
            ) from exc


#: The refusals after which the provider certainly created nothing: ``generate`` may be
#: sent again (retried, or resubmitted once the request is fixed).
_SAFE_TO_RESEND = (RateLimitedError, MaintenanceError, ProviderPermanentError)

_RETRYABLE_CODES: Final[Mapping[int, type[ProviderRetryableError]]] = {
    429: RateLimitedError,
    430: RateLimitedError,
    455: MaintenanceError,
}
_PERMANENT_CODES: Final[Mapping[int, type[ProviderPermanentError]]] = {
    400: ProviderBadRequestError,
    401: ProviderAuthError,
    402: InsufficientCreditsError,
    404: ProviderNotFoundError,
    413: PayloadTooLargeError,
}


def _effective_code(status: int, body_code: int | None) -> int:
    """The provider's verdict: the body's code unless it is a success, else the HTTP
    status; 200 for any success."""
    if body_code is not None and not 200 <= body_code < 300:
        return body_code
    return status if not 200 <= status < 300 else 200


def _error_class(code: int, msg: str | None) -> type[ProviderError] | None:
    """The error ``code`` means; None for a success.

    The provider's pages list 429 both for a rate limit and for insufficient credits; a
    429 whose message speaks of credits is the latter, which no retry can fix.
    """
    if code == 200:
        return None
    if code == 429 and msg and "credit" in msg.lower():
        return InsufficientCreditsError
    if code in _RETRYABLE_CODES:
        return _RETRYABLE_CODES[code]
    if 500 <= code < 600:
        return ProviderServerError
    if code in _PERMANENT_CODES:
        return _PERMANENT_CODES[code]
    if 400 <= code < 500:
        return ProviderPermanentError
    return ProviderAnswerError


_OUTCOME_LABELS: Final[tuple[tuple[type[ProviderError], ProviderOutcome], ...]] = (
    (RateLimitedError, "rate_limited"),
    (MaintenanceError, "maintenance"),
    (ProviderServerError, "server_error"),
    (ProviderNetworkError, "network_error"),
    (ProviderPermanentError, "permanent"),
    (OutcomeUnknownError, "unknown"),
    (ProviderAnswerError, "bad_answer"),
)


def _outcome_label(error: ProviderError) -> ProviderOutcome:
    for cls, label in _OUTCOME_LABELS:
        if isinstance(error, cls):
            return label
    return "bad_answer"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from ``now`` (delta-seconds or an HTTP date);
    None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _envelope(body: bytes) -> _Envelope | None:
    try:
        return msgspec.json.decode(body, type=_Envelope)
    except msgspec.DecodeError:
        return None


def _data(envelope: _Envelope, shape: type[_T]) -> _T:
    if isinstance(envelope.data, msgspec.UnsetType):
        raise ValueError("the answer has no data")
    try:
        return msgspec.json.decode(envelope.data, type=shape)
    except msgspec.DecodeError as exc:
        raise ValueError(f"data is not the documented shape: {exc}") from exc


def _read_created(envelope: _Envelope, body: bytes) -> str:
    created = _data(envelope, _Created)
    task_id = first_task_id((created.taskId, created.task_id))
    if task_id is None:
        raise ValueError("data names no task id")
    return task_id


def _read_record(envelope: _Envelope, body: bytes, asked: str) -> RecordInfo:
    """A missing ``successFlag`` reads as pending (nothing says the task ended); a missing
    task id as the one asked for; a different one is refused."""
    record = _data(envelope, _Record)
    task_id = first_task_id((record.taskId, record.task_id)) or asked
    if task_id != asked:
        raise ValueError(f"the answer is for task {task_id!r}, not {asked!r}")
    flag = PENDING if record.successFlag is None else as_code(record.successFlag)
    if flag not in (PENDING, SUCCESS, CREATE_FAILED, GENERATION_FAILED):
        raise ValueError(f"successFlag {record.successFlag!r} is not one of 0, 1, 2, 3")
    midi = record.midiData or _MidiData()
    return RecordInfo(
        body=body,
        task_id=task_id,
        success_flag=flag,
        midi_state=as_text(midi.state),
        note_count=sum(len(instrument.notes or ()) for instrument in midi.instruments or ()),
        error_code=as_code(record.errorCode),
        error_message=as_text(record.errorMessage),
        create_time=_epoch_ms(record.createTime, "createTime"),
        complete_time=_epoch_ms(record.completeTime, "completeTime"),
    )


def _epoch_ms(value: object, name: str) -> datetime | None:
    """Epoch milliseconds (a number or a numeric string) as an aware datetime."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(type(value).__name__)
        return datetime.fromtimestamp(float(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"{name} {value!r} is not epoch milliseconds") from exc
