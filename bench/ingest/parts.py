"""The floor under the ingest's CPU per request: each part it cannot skip, measured alone.

Every figure is this process's CPU time (``time.process_time``) divided by the operations
done, so it moves little when other programs share the machine (wall-clock rates would
measure them too). The parts, for one body of ``--size``:

* in-process, one at a time: the sha256 of the body, the signature check (HMAC of
  ``taskId.timestamp``), the fields parse (depth check included), the event (build + Avro),
  one ``callback_accepted`` log line (JSON, to /dev/null), the request's metrics;
* against a real Redis and a real Kafka broker (started here), with 64 concurrent
  callers as under load, on asyncio's loop and on uvloop: the dedupe claim and its
  completion (the ingest's own store, pipelined), and one acks=all publish (the ingest's
  producer settings). These are the client side only: the servers' CPU is not counted.

    .venv/bin/python -m bench.ingest.parts                 # 10 KB, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from bench.ingest.run import KEY, SIZES, body_parts
from devenv.kafka import LocalKafka
from devenv.redis import LocalRedis
from services.common.events import sha256_hex
from services.common.kafka import Publisher, ensure_topics
from services.common.logs import configure_logging
from services.common.settings import KafkaSettings, LogSettings, TopicNames
from services.ingest.body import parse_callback
from services.ingest.dedupe import Delivery, RedisDedupeStore
from services.ingest.event import build_event
from services.ingest.metrics import IngestMetrics
from services.ingest.verify import sign, verify_signature

CONCURRENCY = 64


def per_call(work: Callable[[], object], seconds: float = 1.0) -> float:
    """CPU seconds per call of ``work``, over about ``seconds`` of CPU."""
    calls = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        for _ in range(100):
            work()
        calls += 100
    return (time.process_time() - started) / calls


def sync_parts(size: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    task = "parts-" + uuid.uuid4().hex[:18]
    prefix, suffix = body_parts(size)
    body = prefix + task.encode() + suffix
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Timestamp": str(now),
        "X-Webhook-Signature": sign(KEY.encode(), task, now),
    }
    callback = parse_callback(body, max_depth=64)
    received = datetime.now(UTC)

    def event() -> bytes:
        built = build_event(callback, body, received, headers, signature="VERIFIED")
        return built.encode()

    configure_logging(
        LogSettings(level="INFO", format="json"),
        stream=io.TextIOWrapper(open(os.devnull, "wb")),  # noqa: SIM115 - lives with the process
    )
    log = structlog.get_logger("services.ingest.handler")
    structlog.contextvars.bind_contextvars(task_id=task, delivery_key="x" * 64)
    metrics = IngestMetrics(CollectorRegistry())

    def record() -> None:
        metrics.body_size.observe(size)
        metrics.last_accepted.set(time.time())
        metrics.callbacks_by_kind.labels("complete").inc()
        metrics.answered("accepted", 0.01)

    keys = (KEY.encode(),)
    return {
        "sha256 of the body": per_call(lambda: sha256_hex(body)),
        "signature (HMAC of taskId.timestamp)": per_call(
            lambda: verify_signature(headers, task, keys=keys, now=now, tolerance=300)
        ),
        "fields parse (depth check included)": per_call(lambda: parse_callback(body, max_depth=64)),
        "event: build + Avro encode": per_call(event),
        "one log line (JSON)": per_call(
            lambda: log.info("callback_accepted", code=200, kind="complete", size=size)
        ),
        "metrics of one request": per_call(record),
    }


async def concurrently(operation: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """CPU seconds per operation with CONCURRENCY callers for about ``seconds`` (wall)."""
    done = 0
    stop = time.monotonic() + seconds

    async def caller(worker: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await operation(worker * 10_000_000 + done)
            done += 1

    started = time.process_time()
    await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
    return (time.process_time() - started) / max(1, done)


async def network_parts(redis_url: str, bootstrap: str, size: int) -> dict[str, float]:
    store = RedisDedupeStore.from_url(redis_url, window_seconds=3600, binding_seconds=600)
    run = uuid.uuid4().hex[:8]

    async def claim_and_complete(n: int) -> None:
        delivery = Delivery(f"{run}-{n}", "0" * 64, (n, f"sig{n}"))
        claimed = await store.claim(delivery, lease_seconds=10)
        await store.complete(delivery, claimed.token)

    prefix, suffix = body_parts(size)
    topic = f"parts.{run}"
    settings = KafkaSettings(bootstrap_servers=bootstrap, topics=TopicNames(callbacks=topic))
    await ensure_topics(settings, "parts", [topic])
    publisher = Publisher(settings, "parts")
    await publisher.start()

    async def publish(n: int) -> None:
        value = prefix + f"{n:024d}".encode() + suffix
        await publisher.publish(topic, key=b"%d" % (n % 97), value=value, timeout=10)

    try:
        await concurrently(claim_and_complete, 1)  # connections, script cache
        await concurrently(publish, 2)  # metadata, the topic's creation
        return {
            "Redis claim + completion (client, pipelined)": await concurrently(
                claim_and_complete, 4
            ),
            "Kafka publish, acks=all (aiokafka client)": await concurrently(publish, 4),
        }
    finally:
        await publisher.stop()
        await store.close()


def run_loop(loop: str, coroutine: Awaitable[dict[str, float]]) -> dict[str, float]:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="10KB", choices=list(SIZES))
    args = parser.parse_args()
    size = SIZES[args.size]
    print(f"CPU per operation, {args.size} body (load {os.getloadavg()[0]:.2f}):")
    for name, seconds in sync_parts(size).items():
        print(f"  {name}: {seconds * 1e6:.1f} µs")
    broker = LocalKafka(heap="1g").start()
    redis = LocalRedis().start()
    try:
        # Twice each, interleaved: a neighbour's burst falls on both loops.
        results = [
            (loop, run_loop(loop, network_parts(redis.url, broker.bootstrap_servers, size)))
            for loop in ("asyncio", "uvloop", "asyncio", "uvloop")
        ]
    finally:
        redis.stop()
        broker.stop()
    for loop, parts in results:
        for name, seconds in parts.items():
            print(f"  {name}, {loop}: {seconds * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
