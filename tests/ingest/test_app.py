"""The ingest over HTTP against the real session broker (and a real Redis where noted)."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from devenv.redis import LocalRedis
from services.common.errors import ConfigError
from services.common.events import CallbackEvent
from services.common.settings import Secret, Settings
from services.ingest.app import create_app

from ..fixtures.redis import RedisTopology
from ..helpers import eventually, read_topic
from .conftest import (
    CALLBACK_PATH,
    JSON,
    KEY,
    NOW,
    ClientFactory,
    callback_body,
    sample,
    signed_headers,
    task,
)

pytestmark = pytest.mark.kafka


async def events(settings: Settings, count: int, wait: float = 10.0) -> list[CallbackEvent]:
    """The callback events on the test's topic: ``count`` of them, or what came in ``wait`` s."""
    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, count, timeout=wait
    )
    return [CallbackEvent.decode(r.value) for r in records if r.value is not None]


async def error_of(response: web.Response | object) -> dict[str, str]:
    body = await response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]  # type: ignore[no-any-return]


async def raw_post(
    host: str, port: int, framing: str, body: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A callback POST written by hand: ``framing`` is the length or transfer-encoding
    header, ``body`` whatever part of the body is sent at once (the test sends the rest)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n{body}".encode()
    )
    await writer.drain()
    return reader, writer


class TestUnsigned:
    async def test_accept_then_duplicate(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """A callback is published once, marked UNVERIFIED; its repeat publishes nothing."""
        client = await ingest_client()
        tid = task()
        body = callback_body(tid)
        first = await client.post(CALLBACK_PATH, data=body, headers=JSON)
        assert first.status == 200 and await first.json() == {"status": "received"}
        again = await client.post(CALLBACK_PATH, data=body, headers=JSON)
        assert again.status == 200 and await again.json() == {"status": "duplicate"}
        found = await events(settings, 2, wait=4)
        assert len(found) == 1
        assert (found[0].task_id, found[0].body, found[0].signature) == (tid, body, "UNVERIFIED")
        app = client.app
        assert sample(app, "ingest_requests_total", outcome="accepted") == 1
        assert sample(app, "ingest_requests_total", outcome="duplicate") == 1
        assert sample(app, "ingest_last_accepted_timestamp_seconds") > 0

    async def test_concurrent_duplicates_on_one_replica(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """20 identical deliveries at once to one replica (in-process store): one event."""
        client = await ingest_client()
        tid = task()
        body = callback_body(tid)
        responses = await asyncio.gather(
            *(client.post(CALLBACK_PATH, data=body, headers=JSON) for _ in range(20))
        )
        answers = [await r.json() for r in responses]
        assert answers.count({"status": "received"}) == 1
        assert answers.count({"status": "duplicate"}) == 19
        assert [e.task_id for e in await events(settings, 2, wait=4)] == [tid]

    async def test_lone_surrogates_and_odd_headers_still_publish(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """Text the Avro encoder would choke on (lone surrogates) is made valid, not a 500."""
        client = await ingest_client()
        body = json.dumps(
            {"task_id": task(), "msg": "\ud800", "data": {"state": "\udfff"}}
        ).encode()
        response = await client.post(
            CALLBACK_PATH, data=body, headers={**JSON, "User-Agent": "caf\xe9"}
        )
        assert response.status == 200
        (event,) = await events(settings, 1)
        assert event.body == body and event.msg == "\ufffd" and event.state == "\ufffd"


class TestSigned:
    async def test_verified_event(self, ingest_client: ClientFactory, settings: Settings) -> None:
        """A correctly signed callback is published marked VERIFIED."""
        client = await ingest_client(keys=(KEY,))
        tid = task()
        response = await client.post(
            CALLBACK_PATH, data=callback_body(tid), headers=signed_headers(tid)
        )
        assert response.status == 200
        (event,) = await events(settings, 1)
        assert event.signature == "VERIFIED"
        assert "X-Webhook-Signature" not in event.headers

    async def test_the_request_id_in_the_callback_url_is_kept(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """The tracker's request id (query string of the URL it gave the provider) reaches
        the event; a malformed one is dropped and the callback still accepted."""
        client = await ingest_client(keys=(KEY,))
        named, malformed, plain = task(), task(), task()
        for tid, query in ((named, "?request_id=req-7.a:b_c"), (malformed, "?request_id=a b/c")):
            response = await client.post(
                CALLBACK_PATH + query, data=callback_body(tid), headers=signed_headers(tid)
            )
            assert response.status == 200
        await client.post(CALLBACK_PATH, data=callback_body(plain), headers=signed_headers(plain))
        found = {event.task_id: event for event in await events(settings, 3)}
        assert found[named].request_id == "req-7.a:b_c"
        assert found[malformed].request_id is None
        assert found[plain].request_id is None
        assert {event.source for event in found.values()} == {"CALLBACK"}

    async def test_key_rotation(self, ingest_client: ClientFactory) -> None:
        """With old and new keys configured both verify; a third key does not."""
        client = await ingest_client(keys=(b"new-key", b"old-key"))
        for key, status in ((b"new-key", 200), (b"old-key", 200), (b"other", 401)):
            tid = task()
            response = await client.post(
                CALLBACK_PATH, data=callback_body(tid), headers=signed_headers(tid, key=key)
            )
            assert response.status == status, key

    @pytest.mark.parametrize(
        ("offset", "status", "outcome"),
        [
            (-300, 200, "accepted"),
            (300, 200, "accepted"),
            (-301, 401, "stale_timestamp"),
            (301, 401, "stale_timestamp"),
        ],
    )
    async def test_tolerance_edges(
        self, ingest_client: ClientFactory, offset: int, status: int, outcome: str
    ) -> None:
        """Exactly at the tolerance (either way) is accepted; one second past is refused."""
        client = await ingest_client(keys=(KEY,), signature_tolerance_seconds=300)
        tid = task()
        response = await client.post(
            CALLBACK_PATH, data=callback_body(tid), headers=signed_headers(tid, NOW + offset)
        )
        assert response.status == status
        assert sample(client.app, "ingest_requests_total", outcome=outcome) == 1
        if status == 401:
            assert (await error_of(response))["code"] == "stale_timestamp"

    @pytest.mark.parametrize(
        "headers",
        [
            JSON,
            {**signed_headers("someone-else")},
            {**signed_headers("x"), "X-Webhook-Signature": "!!"},
            {**signed_headers("x"), "X-Webhook-Timestamp": "yesterday"},
        ],
    )
    async def test_unsigned_or_forged_is_401(
        self, ingest_client: ClientFactory, headers: dict[str, str]
    ) -> None:
        """Missing, forged or malformed signatures get 401 with a JSON error."""
        client = await ingest_client(keys=(KEY,))
        response = await client.post(CALLBACK_PATH, data=callback_body(task()), headers=headers)
        assert response.status == 401
        assert (await error_of(response))["code"] in (
            "missing_signature",
            "bad_signature",
            "invalid_timestamp",
        )
        assert sample(client.app, "ingest_requests_total", outcome="bad_signature") == 1

    async def test_one_signature_one_body(
        self, ingest_client: ClientFactory, settings: Settings, redis_topology: RedisTopology
    ) -> None:
        """Another body under a used signature is 409; the first body again is a duplicate."""
        client = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        tid = task()
        headers = signed_headers(tid)
        first = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=headers)
        assert first.status == 200
        forged = await client.post(
            CALLBACK_PATH, data=callback_body(tid, msg="forged"), headers=headers
        )
        assert forged.status == 409
        assert (await error_of(forged))["code"] == "signature_reused"
        again = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=headers)
        assert await again.json() == {"status": "duplicate"}
        assert sample(client.app, "ingest_requests_total", outcome="signature_reused") == 1
        assert len(await events(settings, 2, wait=4)) == 1

    async def test_binding_is_shared_across_replicas(
        self, ingest_client: ClientFactory, redis_topology: RedisTopology
    ) -> None:
        """A signature used on one replica cannot carry another body on a second one."""
        one = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        two = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        tid = task()
        headers = signed_headers(tid)
        first = await one.post(CALLBACK_PATH, data=callback_body(tid), headers=headers)
        assert first.status == 200
        forged = await two.post(CALLBACK_PATH, data=callback_body(tid, x=1), headers=headers)
        assert forged.status == 409


@pytest.mark.redis
class TestReplicas:
    async def test_concurrent_duplicates_across_two_replicas(
        self, ingest_client: ClientFactory, settings: Settings, redis_topology: RedisTopology
    ) -> None:
        """30 identical deliveries at once, split over two apps sharing Redis: one event."""
        one = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        two = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        tid = task()
        body, headers = callback_body(tid), signed_headers(tid)
        clients: list[TestClient[web.Request, web.Application]] = [one, two] * 15
        responses = await asyncio.gather(
            *(c.post(CALLBACK_PATH, data=body, headers=headers) for c in clients)
        )
        answers = [await r.json() for r in responses]
        assert all(r.status == 200 for r in responses), answers
        assert answers.count({"status": "received"}) == 1
        assert answers.count({"status": "duplicate"}) == 29
        found = await events(settings, 2, wait=4)
        assert [e.task_id for e in found] == [tid]

    async def test_many_signed_callbacks_all_stored_once(
        self, ingest_client: ClientFactory, settings: Settings, redis_topology: RedisTopology
    ) -> None:
        """24 signed callbacks (on a Cluster: spread over every primary) are each stored
        once; each again is a duplicate; each under a swapped body is 409."""
        client = await ingest_client(
            keys=(KEY,), redis_url=redis_topology.url, **redis_topology.ingest
        )
        tids = [task() for _ in range(24)]

        async def post_all(**extra: str) -> list[int]:
            responses = await asyncio.gather(
                *(
                    client.post(
                        CALLBACK_PATH, data=callback_body(t, **extra), headers=signed_headers(t)
                    )
                    for t in tids
                )
            )
            return [r.status for r in responses]

        assert await post_all() == [200] * 24
        assert sample(client.app, "ingest_requests_total", outcome="accepted") == 24
        assert await post_all() == [200] * 24
        assert sample(client.app, "ingest_requests_total", outcome="duplicate") == 24
        assert await post_all(msg="forged") == [409] * 24
        assert sample(client.app, "ingest_dedupe_backend_up") == 1
        found = await events(settings, 48, wait=4)
        assert sorted(e.task_id for e in found) == sorted(tids)

    async def test_redis_down_keeps_accepting(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """INGEST_DEDUPE_UNAVAILABLE=accept (the default): with Redis gone, callbacks are
        published without dedupe, and metrics and logs say so."""
        server = LocalRedis().start()
        try:
            client = await ingest_client(redis_url=server.url)
            assert sample(client.app, "ingest_dedupe_backend_up") == 1
            server.kill()
            tid = task()
            with structlog.testing.capture_logs() as logs:
                response = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=JSON)
            assert response.status == 200
            assert sample(client.app, "ingest_dedupe_backend_up") == 0
            assert sample(client.app, "ingest_dedupe_errors_total", operation="claim") >= 1
            accepted = sample(client.app, "ingest_dedupe_unavailable_total", action="accepted")
            assert accepted == 1
            assert sample(client.app, "ingest_dedupe_unavailable_total", action="refused") == 0
            assert "published_without_dedupe" in [entry["event"] for entry in logs]
            assert [e.task_id for e in await events(settings, 1)] == [tid]
            server.restart()
            response = await client.post(CALLBACK_PATH, data=callback_body(task()), headers=JSON)
            assert response.status == 200
            assert sample(client.app, "ingest_dedupe_backend_up") == 1
        finally:
            server.stop()

    async def test_redis_down_refuses_when_told_to(
        self, ingest_client: ClientFactory, settings: Settings
    ) -> None:
        """INGEST_DEDUPE_UNAVAILABLE=refuse: with Redis gone, 503 + Retry-After and nothing
        published, so the provider's retry is deduplicated once Redis is back."""
        server = LocalRedis().start()
        try:
            client = await ingest_client(
                redis_url=server.url, dedupe_unavailable="refuse", retry_after_seconds=9
            )
            server.kill()
            tid = task()
            refused = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=JSON)
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "9"
            assert (await error_of(refused))["code"] == "dedupe_unavailable"
            assert sample(client.app, "ingest_requests_total", outcome="unavailable") == 1
            assert sample(client.app, "ingest_dedupe_unavailable_total", action="refused") == 1
            assert sample(client.app, "ingest_dedupe_unavailable_total", action="accepted") == 0
            assert sample(client.app, "ingest_dedupe_backend_up") == 0
            server.restart()
            stored = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=JSON)
            assert stored.status == 200
            again = await client.post(CALLBACK_PATH, data=callback_body(tid), headers=JSON)
            assert await again.json() == {"status": "duplicate"}
            assert [e.task_id for e in await events(settings, 2, wait=4)] == [tid]
        finally:
            server.stop()


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "headers", "status", "code"),
        [
            (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
            (b"{}", {}, 415, "unsupported_media_type"),
            (
                b"{}",
                {"Content-Type": "application/json; charset=latin-1"},
                415,
                "unsupported_media_type",
            ),
            (b"\xff", JSON, 400, "invalid_utf8"),
            (b"{nope", JSON, 400, "invalid_json"),
            (b"[" * 100 + b"]" * 100, JSON, 400, "too_deep"),
            (b"[" * 100_000, JSON, 400, "too_deep"),
            (b"[1]", JSON, 400, "not_an_object"),
            (b'{"code": 200}', JSON, 400, "missing_task_id"),
            (b'{"task_id": "a b"}', JSON, 400, "invalid_task_id"),
        ],
    )
    async def test_clear_answers(
        self,
        ingest_client: ClientFactory,
        body: bytes,
        headers: dict[str, str],
        status: int,
        code: str,
    ) -> None:
        """Each kind of bad request gets its status and a JSON error naming the problem."""
        client = await ingest_client()
        response = await client.post(CALLBACK_PATH, data=body, headers=headers)
        assert response.status == status
        assert (await error_of(response))["code"] == code

    @pytest.mark.parametrize(
        "content_type",
        [
            ";;;",
            'application/json; charset="',
            "application/json; charset=utf-8; charset=latin-1",
            "APPLICATION/JSON",
            "application/json; charset=UTF8",
            "application/json; boundary=x",
            "application/\u00e9",
        ],
    )
    async def test_odd_content_types_never_500(
        self, ingest_client: ClientFactory, content_type: str
    ) -> None:
        """Whatever the Content-Type header holds, the answer is 200 or a 4xx, in JSON."""
        client = await ingest_client()
        response = await client.post(
            CALLBACK_PATH,
            data=callback_body(task()),
            headers={"Content-Type": content_type.encode().decode("unicode_escape")},
        )
        assert response.status in (200, 415), await response.text()
        assert response.content_type == "application/json"

    async def test_declared_oversize_is_refused_unread(self, ingest_client: ClientFactory) -> None:
        """A Content-Length over the limit is refused with 413 before the body is read."""
        client = await ingest_client(max_body_bytes=4096)
        reader, writer = await raw_post(client.host, client.port, f"Content-Length: {10**9}")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()
        assert sample(client.app, "ingest_requests_total", outcome="too_large") == 1

    async def test_chunked_oversize_is_refused(self, ingest_client: ClientFactory) -> None:
        """A chunked body is refused with 413 once it crosses the limit."""
        client = await ingest_client(max_body_bytes=4096)

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b" " * 1024

        response = await client.post(CALLBACK_PATH, data=chunks(), headers=JSON)
        assert response.status == 413
        assert (await error_of(response))["code"] == "body_too_large"

    async def test_sender_gone_mid_body_is_counted_not_an_error(self, settings: Settings) -> None:
        """A connection closed before the declared body arrived: counted, no traceback.

        Served as ``suno-ingest`` serves it (aiohttp's test server would cancel the
        handler instead, which production does not).
        """
        app = create_app(settings, registry=CollectorRegistry())
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            with structlog.testing.capture_logs() as logs:
                _, writer = await raw_post(
                    "127.0.0.1", port, "Content-Length: 100000", '{"task_id": '
                )
                await asyncio.sleep(0.2)  # the handler is reading the body by now
                writer.close()
                await writer.wait_closed()
                await eventually(
                    lambda: sample(app, "ingest_requests_total", outcome="incomplete_body") == 1
                )
        finally:
            await runner.cleanup()
        assert "unexpected_error" not in [entry["event"] for entry in logs]
        assert any(
            entry["event"] == "callback_refused" and entry["code"] == "incomplete_body"
            for entry in logs
        )

    @pytest.mark.parametrize(
        ("framing", "later"),
        [
            ("Content-Length: 1000", '{"task_id": "t"'),
            ("Transfer-Encoding: chunked", '4\r\n{"ta\r\n'),
            # A chunk size that is not hexadecimal: aiohttp stops feeding the body.
            ("Transfer-Encoding: chunked", '4\r\n{"ta\r\nzz\r\n'),
        ],
    )
    async def test_a_stalled_body_gets_408_in_time(
        self, ingest_client: ClientFactory, framing: str, later: str
    ) -> None:
        """A body that stops arriving is answered 408 after the body timeout, not held."""
        client = await ingest_client(body_timeout_seconds=0.5)
        reader, writer = await raw_post(client.host, client.port, framing)
        await asyncio.sleep(0.1)  # the handler is reading the body by now
        writer.write(later.encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        writer.close()
        assert json.loads(body)["error"]["code"] == "body_timeout"
        assert sample(client.app, "ingest_requests_total", outcome="incomplete_body") == 1

    async def test_404_and_405_are_json(self, ingest_client: ClientFactory) -> None:
        """Unknown paths and wrong methods answer JSON errors too."""
        client = await ingest_client()
        missing = await client.get("/nope")
        assert missing.status == 404 and (await error_of(missing))["code"] == "not_found"
        wrong = await client.get(CALLBACK_PATH)
        assert wrong.status == 405 and (await error_of(wrong))["code"] == "method_not_allowed"
        assert "POST" in wrong.headers["Allow"]


class TestOps:
    async def test_health_and_readiness(self, ingest_client: ClientFactory) -> None:
        """/healthz is the process; /readyz is Kafka + topic, and sets the gauge."""
        client = await ingest_client()
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        assert sample(client.app, "ingest_kafka_ready") == 1
        metrics = await (await client.get("/metrics")).text()
        for name in (
            "ingest_requests_total",
            "ingest_publishes_in_flight",
            "ingest_body_size_bytes_bucket",
            "ingest_dedupe_backend_up",
        ):
            assert name in metrics


class TestStartup:
    @pytest.mark.parametrize("secrets", [(), (Secret(""),), (Secret("  "), Secret(""))])
    def test_no_keys_without_the_opt_in_is_refused(self, secrets: tuple[Secret, ...]) -> None:
        """No key (blank ones count as none) and no opt-in: no app, and the error names
        both ways out; nothing reaches for Kafka first."""
        settings = Settings().with_overrides(ingest={"webhook_secrets": secrets})
        assert settings.ingest.allow_unsigned is False  # the default
        with pytest.raises(ConfigError) as refused:
            create_app(settings, registry=CollectorRegistry())
        assert "SUNO_WEBHOOK_SECRETS" in str(refused.value)
        assert "INGEST_ALLOW_UNSIGNED=true" in str(refused.value)

    def test_keys_need_no_opt_in(self) -> None:
        """With a key the app is built, whatever the opt-in says."""
        settings = Settings().with_overrides(ingest={"webhook_secrets": (Secret("k"),)})
        assert isinstance(create_app(settings, registry=CollectorRegistry()), web.Application)

    async def test_no_keys_is_said_loudly(self, ingest_client: ClientFactory) -> None:
        """With the opt-in and without keys the start-up log carries a warning; with keys
        it does not."""
        from structlog.testing import capture_logs

        with capture_logs() as logs:
            await ingest_client()
        warnings = [e for e in logs if e["event"] == "webhook_signatures_disabled"]
        assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
        with capture_logs() as logs:
            await ingest_client(keys=(KEY,))
        assert not [e for e in logs if e["event"] == "webhook_signatures_disabled"]
