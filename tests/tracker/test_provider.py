"""The provider client against a real HTTP server that stands in for the Suno API.

The stand-in answers from a script and records every request it receives, so each test
states what the provider said and checks what the client sent, how often, and what it
raised. Delays are recorded by an injected ``sleep``, never measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

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
from services.common.settings import Secret, TrackerSettings
from services.tracker.metrics import PROVIDER_ENDPOINTS, PROVIDER_OUTCOMES, ProviderMetrics
from services.tracker.provider import (
    GENERATE_PATH,
    RECORD_INFO_PATH,
    ProviderClient,
    RecordInfo,
    retry_after_seconds,
)

API_KEY = "test-key-" + uuid.uuid4().hex[:8]
CALLBACK_URL = "https://ingest.example/callback?request=r-1"


def task_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Reply:
    """One scripted answer: a status and body, or a misbehaviour."""

    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Read the request, then answer only after the test ends (the client times out).
    hang: bool = False
    #: Read the request, then close the connection without answering.
    drop: bool = False


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Provider:
    """The Suno API's stand-in: answers from ``script`` (its last reply repeats) and records
    every request, in order, in ``seen``."""

    def __init__(self) -> None:
        self.script: list[Reply] = [Reply(body=created("unset"))]
        self.seen: list[Seen] = []
        self.events: list[str] = []
        self.release = asyncio.Event()
        self.url = ""

    def answer(self, *replies: Reply) -> None:
        self.script = list(replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.events.append("request")
        self.seen.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if reply.hang:
            await self.release.wait()
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = {"Content-Type": "application/json", **reply.headers}
        return web.Response(status=reply.status, body=raw, headers=headers)


def created(new_id: str) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": {"taskId": new_id}}


def record(new_id: str, **data: Any) -> dict[str, Any]:
    """A ``record-info`` success answer in the documented shape, members overridden."""
    base: dict[str, Any] = {
        "taskId": new_id,
        "recordTaskId": -1,
        "audioId": "e231" + uuid.uuid4().hex[:8],
        "callbackUrl": CALLBACK_URL,
        "completeTime": 1760335255000,
        "createTime": 1760335251000,
        "midiData": {
            "state": "complete",
            "instruments": [
                {"name": "Drums", "notes": [note(73), note(75)]},
                {"name": "Caf\u00e9 Bass", "notes": [note(40)]},
            ],
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": None,
    }
    return {"code": 200, "msg": "success", "data": {**base, **data}}


def note(pitch: int) -> dict[str, Any]:
    return {
        "pitch": pitch,
        "start": 0.036458333333333336,
        "end": "0.18229166666666666",
        "velocity": 1,
    }


def refusal(code: int, msg: str = "refused") -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": None}


class Sleeps:
    """The client's ``sleep``: records each delay and returns at once; ``before`` runs
    first on each call (a test may start a server there)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.before: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.before is not None:
            await self.before()


class UpperBound(random.Random):
    """A generator whose ``uniform`` returns its upper bound and records its bounds, so a
    test sees the backoff ceiling the client asked for."""

    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return b


class CountingLimiter:
    """A limiter that never waits but says it did, and notes each acquire in ``events``."""

    def __init__(self, events: list[str], waited: float) -> None:
        self.events = events
        self.waited = waited

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        self.events.append("acquire")
        yield self.waited
        self.events.append("release")


@dataclass
class Harness:
    provider: Provider
    session: aiohttp.ClientSession
    sleeps: Sleeps
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics: ProviderMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ProviderMetrics(self.registry)

    def settings(self, **overrides: Any) -> TrackerSettings:
        base = TrackerSettings(
            api_base_url=self.provider.url,
            api_key=Secret(API_KEY),
            api_timeout_seconds=5.0,
            api_max_attempts=3,
            api_backoff_seconds=1.0,
            api_backoff_max_seconds=30.0,
        )
        return replace(base, **overrides)

    def client(
        self, limiter: Any = None, rng: random.Random | None = None, **overrides: Any
    ) -> ProviderClient:
        return ProviderClient(
            self.session,
            self.settings(**overrides),
            limiter=limiter,
            metrics=self.metrics,
            sleep=self.sleeps,
            rng=rng or random.Random(1),
        )

    def requests(self, endpoint: str, outcome: str) -> float | None:
        return self.registry.get_sample_value(
            "tracker_provider_requests_total", {"endpoint": endpoint, "outcome": outcome}
        )


@pytest.fixture(name="harness")
async def fixture_harness(aiohttp_server: Any) -> AsyncIterator[Harness]:
    """A started stand-in provider, a client session, a recording sleep."""
    provider = Provider()
    server = await aiohttp_server(provider.app())
    provider.url = str(server.make_url(""))
    async with aiohttp.ClientSession() as session:
        yield Harness(provider, session, Sleeps())
    provider.release.set()


async def call(client: ProviderClient, endpoint: str, midi_id: str = "m-1") -> object:
    """The endpoint's call with ordinary arguments."""
    if endpoint == "generate":
        return await client.generate(task_id(), CALLBACK_URL)
    return await client.record_info(midi_id)


def success(endpoint: str, midi_id: str = "m-1") -> Reply:
    return Reply(body=created(midi_id) if endpoint == "generate" else record(midi_id))


class TestGenerate:
    async def test_returns_the_new_task_id_and_sends_the_documented_request(
        self, harness: Harness
    ) -> None:
        """POST with a Bearer key and the JSON body the provider documents."""
        new_id, source = task_id(), task_id()
        harness.provider.answer(Reply(body=created(new_id)))
        assert await harness.client().generate(source, CALLBACK_URL, audio_id="a-9") == new_id
        [seen] = harness.provider.seen
        assert (seen.method, seen.path) == ("POST", GENERATE_PATH)
        assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
        assert json.loads(seen.body) == {
            "taskId": source,
            "callBackUrl": CALLBACK_URL,
            "audioId": "a-9",
        }

    async def test_audio_id_is_left_out_when_not_given(self, harness: Harness) -> None:
        """The provider's audioId is optional: no null is sent in its place."""
        await harness.client().generate("src", CALLBACK_URL)
        assert json.loads(harness.provider.seen[0].body) == {
            "taskId": "src",
            "callBackUrl": CALLBACK_URL,
        }

    async def test_a_task_id_in_snake_case_is_read_too(self, harness: Harness) -> None:
        """The provider spells the task id both ways across its pages."""
        harness.provider.answer(
            Reply(body={"code": 200, "msg": "success", "data": {"task_id": "t-2"}})
        )
        assert await harness.client().generate("src", CALLBACK_URL) == "t-2"

    def test_a_missing_api_key_is_a_config_error(self, harness: Harness) -> None:
        """Without a key every call would be refused: say so at start-up, naming the variable."""
        with pytest.raises(ConfigError, match="SUNO_API_KEY"):
            harness.client(api_key=None)


class TestRecordInfo:
    async def test_reads_the_record_and_keeps_the_exact_bytes(self, harness: Harness) -> None:
        """A GET with the task id; the body is kept byte for byte (no re-serialization)."""
        midi_id = task_id()
        raw = json.dumps(record(midi_id), indent=3, ensure_ascii=True).encode()
        harness.provider.answer(Reply(body=raw))
        info = await harness.client().record_info(midi_id)
        [seen] = harness.provider.seen
        assert (seen.method, seen.path, seen.query) == (
            "GET",
            RECORD_INFO_PATH,
            {"taskId": midi_id},
        )
        assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
        assert info == RecordInfo(
            body=raw,
            task_id=midi_id,
            success_flag=1,
            midi_state="complete",
            note_count=3,
            error_code=None,
            error_message=None,
            create_time=datetime(2025, 10, 13, 6, 0, 51, tzinfo=UTC),
            complete_time=datetime(2025, 10, 13, 6, 0, 55, tzinfo=UTC),
        )
        assert info.body == raw
        assert info.outcome == "completed"

    @pytest.mark.parametrize(
        ("data", "outcome"),
        [
            ({"successFlag": 0, "midiData": None, "completeTime": None}, "pending"),
            ({"successFlag": "1"}, "completed"),
            ({"successFlag": 1, "midiData": None}, "empty"),
            ({"successFlag": 1, "midiData": {"state": "complete"}}, "empty"),
            ({"successFlag": 1, "midiData": {"state": "complete", "instruments": []}}, "empty"),
            (
                {"successFlag": 1, "midiData": {"instruments": [{"name": "Drums", "notes": []}]}},
                "empty",
            ),
            ({"successFlag": 1, "midiData": {"instruments": [{"name": "Drums"}]}}, "empty"),
            ({"successFlag": 2, "midiData": None}, "failed"),
            ({"successFlag": "3", "errorCode": "500", "errorMessage": "boom"}, "failed"),
        ],
    )
    async def test_outcome(self, harness: Harness, data: dict[str, Any], outcome: str) -> None:
        """Pending, completed, empty (a success without notes) or failed."""
        harness.provider.answer(Reply(body=record("m-1", **data)))
        assert (await harness.client().record_info("m-1")).outcome == outcome

    async def test_numbers_as_strings_and_missing_members_are_tolerated(
        self, harness: Harness
    ) -> None:
        """Times and codes as numeric strings are read; absent members read as unknown."""
        body = {
            "code": "200",
            "data": {"successFlag": "3", "errorCode": "413", "createTime": "1760335251000"},
        }
        harness.provider.answer(Reply(body=body))
        info = await harness.client().record_info("m-7")
        assert (info.task_id, info.success_flag, info.error_code) == ("m-7", 3, 413)
        assert info.create_time == datetime(2025, 10, 13, 6, 0, 51, tzinfo=UTC)
        assert (info.complete_time, info.midi_state, info.error_message) == (None, None, None)

    async def test_a_missing_success_flag_reads_as_pending(self, harness: Harness) -> None:
        """Nothing says the task ended, so it is polled again rather than closed."""
        harness.provider.answer(Reply(body={"code": 200, "data": {"taskId": "m-1"}}))
        assert (await harness.client().record_info("m-1")).outcome == "pending"

    @pytest.mark.parametrize(
        "body",
        [
            b"<html>ok</html>",
            b"[]",
            {"code": 200, "msg": "success"},
            {"code": 200, "msg": "success", "data": None},
            {"code": 200, "msg": "success", "data": ["m-1"]},
            record("m-1", midiData="complete"),
            record("m-1", midiData={"instruments": "Drums"}),
            record("m-1", midiData={"instruments": [{"notes": {"pitch": 1}}]}),
            record("m-1", successFlag=7),
            record("m-1", successFlag=True),
            record("m-1", createTime="yesterday"),
            record("m-1", completeTime=10**30),
            record("someone-else"),
        ],
        ids=lambda body: str(body)[:40],
    )
    async def test_an_undocumented_answer_is_an_answer_error(
        self, harness: Harness, body: bytes | dict[str, Any]
    ) -> None:
        """A success we cannot read is raised once (no retry), saying so, never guessed at."""
        harness.provider.answer(Reply(body=body))
        with pytest.raises(ProviderAnswerError, match="record_info: unreadable success answer"):
            await harness.client().record_info("m-1")
        assert len(harness.provider.seen) == 1
        assert harness.sleeps.delays == []
        assert harness.requests("record_info", "bad_answer") == 1


PERMANENT = [
    (400, "bad", ProviderBadRequestError),
    (401, "unauthorized", ProviderAuthError),
    (402, "no money", InsufficientCreditsError),
    (404, "no such task", ProviderNotFoundError),
    (413, "too large", PayloadTooLargeError),
    (405, "method", ProviderPermanentError),
    (403, "forbidden", ProviderPermanentError),
    (429, "Insufficient credits", InsufficientCreditsError),
]


class TestPermanentErrors:
    @pytest.mark.parametrize("endpoint", PROVIDER_ENDPOINTS)
    @pytest.mark.parametrize(("code", "msg", "error"), PERMANENT)
    async def test_raised_at_once_from_the_http_status(
        self, harness: Harness, endpoint: str, code: int, msg: str, error: type[ProviderError]
    ) -> None:
        """One request, no retry; the error carries the code, endpoint and attempt count."""
        harness.provider.answer(Reply(status=code, body=refusal(code, msg)))
        with pytest.raises(error) as raised:
            await call(harness.client(), endpoint)
        assert type(raised.value) is error
        assert (raised.value.code, raised.value.endpoint, raised.value.attempts) == (
            code,
            endpoint,
            1,
        )
        assert len(harness.provider.seen) == 1
        assert harness.sleeps.delays == []
        assert harness.requests(endpoint, "permanent") == 1

    @pytest.mark.parametrize(("code", "msg", "error"), PERMANENT)
    async def test_raised_from_the_body_code_of_an_http_200(
        self, harness: Harness, code: int, msg: str, error: type[ProviderError]
    ) -> None:
        """The provider's code in the body counts even when the HTTP status says 200."""
        harness.provider.answer(Reply(status=200, body=refusal(code, msg)))
        with pytest.raises(error):
            await harness.client().record_info("m-1")
        assert len(harness.provider.seen) == 1

    async def test_the_message_says_what_to_do(self, harness: Harness) -> None:
        """A refused key names the variable to check, and the provider's own words."""
        harness.provider.answer(Reply(status=401, body=refusal(401, "Invalid API key")))
        with pytest.raises(ProviderAuthError) as raised:
            await harness.client().record_info("m-1")
        assert str(raised.value) == (
            "record_info: the provider answered 401: 'Invalid API key' (1 attempt); "
            "check SUNO_API_KEY"
        )


RETRYABLE = [
    (429, RateLimitedError),
    (430, RateLimitedError),
    (455, MaintenanceError),
    (500, ProviderServerError),
    (502, ProviderServerError),
    (503, ProviderServerError),
]


class TestRetries:
    @pytest.mark.parametrize(("code", "error"), RETRYABLE)
    async def test_record_info_is_retried_then_succeeds(
        self, harness: Harness, code: int, error: type[ProviderError]
    ) -> None:
        """A retryable answer is followed by a second request after one backoff delay."""
        harness.provider.answer(Reply(status=code, body=refusal(code)), success("record_info"))
        info = await harness.client().record_info("m-1")
        assert info.outcome == "completed"
        assert len(harness.provider.seen) == 2
        assert len(harness.sleeps.delays) == 1

    @pytest.mark.parametrize(("code", "error"), RETRYABLE)
    async def test_record_info_gives_up_after_max_attempts(
        self, harness: Harness, code: int, error: type[ProviderError]
    ) -> None:
        """After ``api_max_attempts`` requests the last error is raised, counting them."""
        harness.provider.answer(Reply(status=code, body=refusal(code)))
        with pytest.raises(error) as raised:
            await harness.client(api_max_attempts=4).record_info("m-1")
        assert type(raised.value) is error
        assert raised.value.attempts == 4
        assert "(4 attempts)" in str(raised.value)
        assert len(harness.provider.seen) == 4
        assert len(harness.sleeps.delays) == 3

    @pytest.mark.parametrize(("code", "error"), RETRYABLE[:3])
    async def test_generate_is_retried_where_nothing_was_created(
        self, harness: Harness, code: int, error: type[ProviderError]
    ) -> None:
        """429, 430 and 455 say the provider created nothing: sending again is safe."""
        harness.provider.answer(Reply(status=code, body=refusal(code)), success("generate", "g-1"))
        assert await harness.client().generate("src", CALLBACK_URL) == "g-1"
        assert len(harness.provider.seen) == 2
        assert harness.provider.seen[0].body == harness.provider.seen[1].body

    async def test_generate_gives_up_after_max_attempts(self, harness: Harness) -> None:
        harness.provider.answer(Reply(status=429, body=refusal(429, "slow down")))
        with pytest.raises(RateLimitedError) as raised:
            await harness.client().generate("src", CALLBACK_URL)
        assert (raised.value.attempts, len(harness.provider.seen)) == (3, 3)

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (refusal(429), RateLimitedError),
            (refusal(430), RateLimitedError),
            ({"code": "455", "msg": "maintenance", "data": None}, MaintenanceError),
            (refusal(500), ProviderServerError),
        ],
    )
    async def test_a_retryable_body_code_in_an_http_200(
        self, harness: Harness, body: dict[str, Any], error: type[ProviderError]
    ) -> None:
        """HTTP 200 with ``"code": 429`` is a rate limit, retried like an HTTP 429."""
        harness.provider.answer(Reply(status=200, body=body), success("record_info"))
        assert (await harness.client().record_info("m-1")).outcome == "completed"
        assert len(harness.provider.seen) == 2
        harness.provider.answer(Reply(status=200, body=body))
        with pytest.raises(error):
            await harness.client().record_info("m-1")

    async def test_an_error_page_is_read_by_its_http_status(self, harness: Harness) -> None:
        """A proxy's HTML 502 has no body code: the HTTP status decides (server error)."""
        harness.provider.answer(Reply(status=502, body=b"<html>Bad Gateway</html>"))
        with pytest.raises(ProviderServerError) as raised:
            await harness.client().record_info("m-1")
        assert raised.value.code == 502

    async def test_record_info_is_retried_after_a_timeout(self, harness: Harness) -> None:
        """A GET changes nothing at the provider: a request without answer is sent again."""
        harness.provider.answer(Reply(hang=True), success("record_info"))
        info = await harness.client(api_timeout_seconds=0.2).record_info("m-1")
        assert info.outcome == "completed"
        assert len(harness.provider.seen) == 2
        assert harness.requests("record_info", "network_error") == 1

    async def test_record_info_is_retried_after_a_dropped_connection(
        self, harness: Harness
    ) -> None:
        harness.provider.answer(Reply(drop=True), success("record_info"))
        assert (await harness.client().record_info("m-1")).outcome == "completed"
        assert len(harness.provider.seen) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestConnectionRefused:
    @pytest.mark.parametrize("endpoint", PROVIDER_ENDPOINTS)
    async def test_retried_until_the_provider_listens(
        self, harness: Harness, endpoint: str
    ) -> None:
        """No connection means no request reached the provider: safe to retry, even generate."""
        port = free_port()
        late = Provider()
        late.answer(success(endpoint, "m-1"))
        server = TestServer(late.app(), host="127.0.0.1", port=port)

        async def start() -> None:
            if server.runner is None:
                await server.start_server()

        harness.sleeps.before = start
        client = harness.client(api_base_url=f"http://127.0.0.1:{port}")
        try:
            await call(client, endpoint)
        finally:
            await server.close()
        assert len(harness.sleeps.delays) == 1
        assert len(late.seen) == 1
        assert harness.requests(endpoint, "network_error") == 1
        assert harness.requests(endpoint, "ok") == 1

    async def test_a_connection_that_never_completes_is_retried(self, harness: Harness) -> None:
        """A TLS handshake that never ends means no request was sent: even generate retries."""
        accepted: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        silent = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        client = harness.client(api_base_url=f"https://127.0.0.1:{port}", api_timeout_seconds=0.4)
        try:
            with pytest.raises(ProviderNetworkError, match="could not connect"):
                await client.generate("src", CALLBACK_URL)
        finally:
            for writer in accepted:
                writer.close()
            silent.close()
            await silent.wait_closed()
        assert len(accepted) == 3
        assert len(harness.sleeps.delays) == 2

    async def test_gives_up_as_a_network_error(self, harness: Harness) -> None:
        client = harness.client(api_base_url=f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ProviderNetworkError, match="could not connect") as raised:
            await client.generate("src", CALLBACK_URL)
        assert (raised.value.attempts, raised.value.code) == (3, None)
        assert "SUNO_API_BASE_URL" in str(raised.value)


class TestOutcomeUnknown:
    @pytest.mark.parametrize(
        "reply",
        [
            Reply(status=500, body=refusal(500)),
            Reply(status=503, body=b"Service Unavailable"),
            Reply(status=200, body=refusal(500, "internal error")),
            Reply(status=200, body=b"not json"),
            Reply(status=200, body={"code": 200, "msg": "success", "data": {}}),
            Reply(status=302, body=b"", headers={"Location": "/elsewhere"}),
            Reply(drop=True),
        ],
        ids=["500", "503-text", "body-500", "not-json", "no-task-id", "redirect", "dropped"],
    )
    async def test_generate_that_may_have_created_a_task_is_sent_once(
        self, harness: Harness, reply: Reply
    ) -> None:
        """Another generate could create a second task: raise at once, sent exactly once."""
        harness.provider.answer(reply, success("generate"))
        with pytest.raises(OutcomeUnknownError, match="do not resubmit"):
            await harness.client().generate("src", CALLBACK_URL)
        assert len(harness.provider.seen) == 1
        assert harness.sleeps.delays == []
        assert harness.requests("generate", "unknown") == 1

    async def test_generate_timing_out_after_sending_is_sent_once(self, harness: Harness) -> None:
        """The provider read the request and did not answer in time: its effect is unknown."""
        harness.provider.answer(Reply(hang=True), success("generate"))
        with pytest.raises(OutcomeUnknownError, match="no answer within") as raised:
            await harness.client(api_timeout_seconds=0.2).generate("src", CALLBACK_URL)
        assert not isinstance(raised.value, ProviderRetryableError)
        assert len(harness.provider.seen) == 1
        assert harness.sleeps.delays == []


class TestBackoff:
    async def test_full_jitter_ceiling_doubles_up_to_the_maximum(self, harness: Harness) -> None:
        """Each delay is drawn from uniform(0, min(max, base * 2**n))."""
        rng = UpperBound()
        harness.provider.answer(Reply(status=503, body=refusal(503)))
        client = harness.client(
            rng=rng, api_max_attempts=6, api_backoff_seconds=1.5, api_backoff_max_seconds=10.0
        )
        with pytest.raises(ProviderServerError):
            await client.record_info("m-1")
        assert rng.bounds == [(0.0, 1.5), (0.0, 3.0), (0.0, 6.0), (0.0, 10.0), (0.0, 10.0)]
        assert harness.sleeps.delays == [1.5, 3.0, 6.0, 10.0, 10.0]

    async def test_jittered_delays_stay_within_their_ceilings(self, harness: Harness) -> None:
        harness.provider.answer(Reply(status=429, body=refusal(429)))
        client = harness.client(
            rng=random.Random(7), api_max_attempts=8, api_backoff_max_seconds=20.0
        )
        with pytest.raises(RateLimitedError):
            await client.record_info("m-1")
        ceilings = [min(20.0, 2.0**n) for n in range(7)]
        assert len(harness.sleeps.delays) == 7
        assert all(0 <= d <= c for d, c in zip(harness.sleeps.delays, ceilings, strict=True))
        assert len(set(harness.sleeps.delays)) == 7

    @pytest.mark.parametrize("code", [429, 503])
    async def test_retry_after_is_honoured(self, harness: Harness, code: int) -> None:
        """The provider's Retry-After replaces the jittered delay."""
        harness.provider.answer(
            Reply(status=code, body=refusal(code), headers={"Retry-After": "7"}),
            success("record_info"),
        )
        await harness.client(rng=UpperBound()).record_info("m-1")
        assert harness.sleeps.delays == [7.0]

    async def test_each_retry_is_logged_without_the_key(self, harness: Harness) -> None:
        """An operator sees which call waits and why, and nothing more (no key, no body)."""
        harness.provider.answer(Reply(status=430, body=refusal(430)), success("record_info"))
        with structlog.testing.capture_logs() as logs:
            await harness.client(rng=UpperBound()).record_info("m-1")
        assert logs == [
            {
                "event": "provider_retry",
                "log_level": "warning",
                "endpoint": "record_info",
                "attempt": 1,
                "code": 430,
                "error": "RateLimitedError",
                "delay_seconds": 1.0,
            }
        ]

    async def test_a_retry_after_beyond_the_longest_delay_is_raised_at_once(
        self, harness: Harness
    ) -> None:
        """The client does not block longer than configured: the caller gets the wait."""
        harness.provider.answer(
            Reply(status=429, body=refusal(429), headers={"Retry-After": "120"}),
            success("record_info"),
        )
        with pytest.raises(RateLimitedError) as raised:
            await harness.client(api_backoff_max_seconds=30.0).record_info("m-1")
        assert raised.value.retry_after == 120.0
        assert harness.sleeps.delays == []
        assert len(harness.provider.seen) == 1

    @pytest.mark.parametrize(
        ("header", "seconds"),
        [
            (None, None),
            ("3", 3.0),
            ("0.5", 0.5),
            ("-4", 0.0),
            ("Wed, 21 Oct 2026 07:28:10 GMT", 10.0),
            ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),
            ("soon", None),
            ("nan", None),
            ("inf", None),
        ],
    )
    def test_retry_after_header(self, header: str | None, seconds: float | None) -> None:
        """Delta-seconds or an HTTP date; anything else is ignored (jitter applies)."""
        now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)
        assert retry_after_seconds(header, now) == seconds


class TestLimiterAndMetrics:
    async def test_the_limiter_is_awaited_before_every_request(self, harness: Harness) -> None:
        """Each retry takes a slot of the shared rate limit too, held until its answer is
        in (the provider counts arrivals, which come after the grant); its wait recorded."""
        limiter = CountingLimiter(harness.provider.events, waited=0.25)
        harness.provider.answer(
            Reply(status=429, body=refusal(429)),
            Reply(status=455, body=refusal(455)),
            success("record_info"),
        )
        await harness.client(limiter=limiter).record_info("m-1")
        assert harness.provider.events == ["acquire", "request", "release"] * 3
        sample = harness.registry.get_sample_value
        assert sample("tracker_rate_limit_wait_seconds_count") == 3
        assert sample("tracker_rate_limit_wait_seconds_sum") == 0.75

    def test_every_series_starts_at_zero(self) -> None:
        """Dashboards see 0, not "no data", before the first request."""
        registry = CollectorRegistry()
        ProviderMetrics(registry)
        for endpoint in PROVIDER_ENDPOINTS:
            labels = {"endpoint": endpoint}
            count = "tracker_provider_request_duration_seconds_count"
            assert registry.get_sample_value(count, labels) == 0
            for outcome in PROVIDER_OUTCOMES:
                value = registry.get_sample_value(
                    "tracker_provider_requests_total", {**labels, "outcome": outcome}
                )
                assert value == 0
        assert registry.get_sample_value("tracker_rate_limit_wait_seconds_count") == 0

    async def test_each_request_is_counted_by_outcome_and_timed(self, harness: Harness) -> None:
        harness.provider.answer(
            Reply(status=429, body=refusal(429)),
            Reply(status=455, body=refusal(455)),
            Reply(status=500, body=refusal(500)),
            success("record_info"),
        )
        await harness.client(api_max_attempts=4).record_info("m-1")
        outcomes = {o: harness.requests("record_info", o) for o in PROVIDER_OUTCOMES}
        assert outcomes == {
            "ok": 1,
            "rate_limited": 1,
            "maintenance": 1,
            "server_error": 1,
            "network_error": 0,
            "permanent": 0,
            "unknown": 0,
            "bad_answer": 0,
        }
        count = harness.registry.get_sample_value(
            "tracker_provider_request_duration_seconds_count", {"endpoint": "record_info"}
        )
        assert count == 4
        assert harness.requests("generate", "ok") == 0
