"""The services on real loopback ports, and traffic that exercises every outcome.

Shared by the Prometheus test (which needs every series to exist) and the log test (which
needs secrets, signatures and distinctive bodies to pass through every service). Given a
database, the tracker runs too, against the provider simulator (signing its callbacks with
the ingest's key), so that its submissions, callbacks and polls show in its metrics.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from devenv.simulator import SimConfig
from devenv.simulator import create_app as create_simulator
from services.archiver.app import create_app as create_archiver
from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH
from services.ingest.app import create_app as create_ingest
from services.processor.app import create_app as create_processor
from services.tracker.app import create_app as create_tracker

__all__ = [
    "JOBS",
    "Pipeline",
    "Traffic",
    "pipeline_settings",
    "running_pipeline",
    "send_tracker_traffic",
    "send_traffic",
]

#: Scrape job names, as the ServiceMonitors and the example prometheus.yml name them.
JOBS = ("suno-midi-ingest", "suno-midi-processor", "suno-midi-archiver", "suno-midi-tracker")

#: The provider simulator's API key, and the bearer token of the tracker's API.
SIM_API_KEY = "obs-sim-api-key"
TRACKER_TOKEN = "obs-tracker-token"

#: The ingest's body limit in these tests: small, so "too large" is cheap to provoke.
MAX_BODY_BYTES = 64 * 1024


def pipeline_settings(settings: Settings, secret: str) -> Settings:
    return settings.with_overrides(
        ingest={"webhook_secrets": (Secret(secret),), "max_body_bytes": MAX_BODY_BYTES}
    )


@dataclass
class Pipeline:
    settings: Settings
    ingest: TestServer
    processor: TestServer
    archiver: TestServer
    http: aiohttp.ClientSession
    tracker: TestServer | None = None
    simulator: TestServer | None = None

    @property
    def callback_url(self) -> str:
        return str(self.ingest.make_url(CALLBACK_PATH))

    @property
    def services(self) -> list[TestServer]:
        """The services Prometheus scrapes, in the order of ``JOBS``."""
        servers = [self.ingest, self.processor, self.archiver]
        return servers if self.tracker is None else [*servers, self.tracker]

    def targets(self) -> dict[str, list[str]]:
        return {
            job: [f"127.0.0.1:{server.port}"]
            for job, server in zip(JOBS, self.services, strict=False)
        }

    async def scrape(self, server: TestServer) -> str:
        async with self.http.get(server.make_url("/metrics")) as response:
            response.raise_for_status()
            return await response.text()


def _tracker_settings(
    settings: Settings, database_url: str, sim: TestServer, callback_url: str
) -> Settings:
    """The tracker's settings: the simulator as provider, the running ingest as callback
    URL, polls soon after submission so that recoveries happen within the test."""
    return settings.with_overrides(
        tracker={
            "port": 0,
            "group_id": f"obs-tracker-{uuid.uuid4().hex[:8]}",
            "database_url": Secret(database_url),
            "api_base_url": str(sim.make_url("")).rstrip("/"),
            "api_key": Secret(SIM_API_KEY),
            "api_tokens": (Secret(TRACKER_TOKEN),),
            "callback_url": callback_url,
            "poll_after_seconds": 1,
            "poll_interval_seconds": 1,
            "poll_max_interval_seconds": 2,
            "api_backoff_seconds": 0.05,
            "api_backoff_max_seconds": 0.5,
            "api_timeout_seconds": 5.0,
        }
    )


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings, *, database_url: str | None = None
) -> AsyncIterator[Pipeline]:
    """Ingest, processor and archiver, each an aiohttp app on its own 127.0.0.1 port; with
    ``database_url`` also the provider simulator and the tracker."""
    started: list[TestServer] = []

    async def start(server: TestServer) -> TestServer:
        await server.start_server()
        started.append(server)
        return server

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            ingest, processor, archiver = [
                await start(TestServer(factory(settings), host="127.0.0.1"))
                for factory in (create_ingest, create_processor, create_archiver)
            ]
            pipeline = Pipeline(settings, ingest, processor, archiver, http=http)
            if database_url is not None:
                pipeline.simulator = await start(_simulator(settings))
                tracked = _tracker_settings(
                    settings, database_url, pipeline.simulator, pipeline.callback_url
                )
                pipeline.tracker = await start(
                    TestServer(create_tracker(tracked), host="127.0.0.1")
                )
            yield pipeline
        finally:
            for server in reversed(started):
                await server.close()


def _simulator(settings: Settings) -> TestServer:
    """The provider, signing its callbacks with the key the ingest verifies."""
    (key,) = settings.ingest.webhook_secrets
    config = SimConfig(
        api_key=SIM_API_KEY,
        webhook_key=key.get().encode(),
        completion_seconds=0.2,
        callback_retry_seconds=0.1,
        duplicate_gap_seconds=0.1,
        rate_limit_requests=1000,
    )
    return TestServer(create_simulator(config), host="127.0.0.1")


def sign(secret: str, task_id: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


@dataclass
class Traffic:
    """What was sent and how the ingest answered."""

    statuses: Counter[int] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    #: Every signature value sent, valid or not: none may appear in a log.
    signatures: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    #: The body of each accepted callback, by task id (its delivery key names its sha256).
    bodies: dict[str, bytes] = field(default_factory=dict)
    garbage_records: int = 0


def _complete_body(task_id: str, marker: str, shape: str) -> bytes:
    notes = [
        {"pitch": 60, "start": 0.0, "end": 0.5, "velocity": 0.8},
        {"pitch": 64, "start": "0.5", "end": "1.0", "velocity": 1},
        # Dropped by normalization, each for a reason: the dashboard's drop panel needs them.
        {"pitch": 200, "start": 1.0, "end": 1.5, "velocity": 1},
        {"pitch": 62, "start": 2.0, "end": 1.0, "velocity": 1},
        {"pitch": 61, "start": "not-a-number", "end": 3.0, "velocity": 1},
    ]
    instruments = [
        {"name": f"Acoustic Grand Piano {marker}", "notes": notes},
        {"name": "Drums", "notes": [{"pitch": 36, "start": 0.0, "end": 0.1, "velocity": 1}]},
    ]
    if shape == "top":
        payload = {
            "task_id": task_id,
            "code": 200,
            "msg": "success",
            "data": {"state": "complete", "instruments": instruments},
        }
    else:
        payload = {
            "code": 200,
            "msg": "success",
            "data": {"taskId": task_id, "state": "complete", "instruments": instruments},
        }
    return json.dumps(payload).encode()


def _failure_body(task_id: str, marker: str) -> bytes:
    return json.dumps(
        {"task_id": task_id, "code": 500, "msg": f"MIDI generation failed {marker}", "data": None}
    ).encode()


async def send_traffic(
    pipeline: Pipeline, *, secret: str, marker: str, accepted: int = 6
) -> Traffic:
    """Callbacks producing every outcome the ingest can be made to give on purpose.

    accepted (both body shapes and a failure), duplicate, signature_reused, bad_signature
    (wrong key, and no signature), stale_timestamp, too_large, unsupported_media_type,
    bad_request; plus a garbage record written straight to the callbacks topic, which both
    consumers dead-letter. (unavailable and overloaded need a broken or saturated Kafka.)
    """
    traffic = Traffic()
    run = uuid.uuid4().hex[:8]

    async def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        async with pipeline.http.post(pipeline.callback_url, data=body, headers=headers) as r:
            status = r.status
            try:
                answer = await r.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                answer = {}
        traffic.statuses[status] += 1
        return status, answer if isinstance(answer, dict) else {}

    def signed_headers(task_id: str, timestamp: int, key: str = secret) -> dict[str, str]:
        signature = sign(key, task_id, timestamp)
        traffic.signatures.append(signature)
        return {
            "Content-Type": "application/json",
            "X-Webhook-Timestamp": str(timestamp),
            "X-Webhook-Signature": signature,
        }

    now = int(time.time())
    first: tuple[str, bytes, dict[str, str]] | None = None
    for index in range(accepted):
        task_id = f"obs-{run}-{index}"
        traffic.task_ids.append(task_id)
        if index % 3 == 2:
            body = _failure_body(task_id, marker)
        else:
            body = _complete_body(task_id, marker, "top" if index % 3 == 0 else "data")
        headers = signed_headers(task_id, now)
        status, answer = await post(body, headers)
        if status == 200 and answer.get("status") == "received":
            traffic.accepted.append(task_id)
            traffic.bodies[task_id] = body
        if first is None:
            first = (task_id, body, headers)
    assert first is not None
    task_id, body, headers = first

    # The same delivery again: a duplicate.
    await post(body, headers)
    # Another body under the used (task id, timestamp, signature): signature_reused.
    other = json.loads(body)
    other["msg"] = f"tampered {marker}"
    await post(json.dumps(other).encode(), headers)
    # Signed with a key we do not hold, and not signed at all: bad_signature.
    forged_id = f"obs-{run}-forged"
    await post(
        _complete_body(forged_id, marker, "top"),
        signed_headers(forged_id, now, key=f"not-the-key-{run}"),
    )
    await post(_complete_body(forged_id, marker, "top"), {"Content-Type": "application/json"})
    # A correct signature an hour old: stale_timestamp.
    stale_id = f"obs-{run}-stale"
    await post(_complete_body(stale_id, marker, "top"), signed_headers(stale_id, now - 3600))
    # Too large, wrong media type, not JSON, no task id.
    big_id = f"obs-{run}-big"
    big = json.dumps({"task_id": big_id, "padding": marker * (MAX_BODY_BYTES // len(marker))})
    await post(big.encode(), signed_headers(big_id, now))
    await post(body, {**headers, "Content-Type": "text/plain"})
    # With fresh, well-formed signature headers: missing ones are refused (401) before the
    # body is read, and only the body's task id can disprove these.
    unparsed = signed_headers(f"obs-{run}-unparsed", now)
    await post(f"{{not json {marker}".encode(), unparsed)
    await post(json.dumps({"msg": marker}).encode(), unparsed)

    # A record no schema can read, straight onto the callbacks topic: both consumers
    # dead-letter it as undecodable.
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            pipeline.settings.kafka.topics.callbacks,
            key=f"garbage-{run}".encode(),
            value=b"\x00 garbage, not an Avro single-object message",
        )
        traffic.garbage_records += 1
    finally:
        await producer.stop()
    return traffic


async def send_tracker_traffic(pipeline: Pipeline, *, run: str) -> list[str]:
    """Requests through the tracker's API: one whose callback the provider delivers, one
    whose callbacks it drops (a poll recovers it), one that fails. Their request ids."""
    assert pipeline.tracker is not None and pipeline.simulator is not None
    fates = {"delivered": "deliver", "lost": "drop", "failed": "deliver"}
    request_ids = []
    for name, callback in fates.items():
        source = f"obs-src-{run}-{name}"
        script = {"outcome": "failure" if name == "failed" else "success", "callback": callback}
        async with pipeline.http.put(
            pipeline.simulator.make_url(f"/_sim/scripts/{source}"), json=script
        ) as answer:
            assert answer.status < 300, await answer.text()
        request_id = f"obs-{run}-{name}"
        async with pipeline.http.post(
            pipeline.tracker.make_url("/v1/midi/requests"),
            json={"source_task_id": source, "request_id": request_id},
            headers={"Authorization": f"Bearer {TRACKER_TOKEN}"},
        ) as answer:
            assert answer.status < 300, await answer.text()
        request_ids.append(request_id)
    return request_ids
