"""Kafka wiring shared by the services: client options, topic declarations, the publisher.

Third-party errors are converted here (``PublishError``), and a publisher that is not
started says so instead of failing deep inside aiokafka.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import RecordMetadata

from .errors import (
    ConfigError,
    KafkaUnavailableError,
    NotStartedError,
    PublishError,
    PublishTimeoutError,
)
from .settings import KafkaSettings

__all__ = [
    "Acknowledgement",
    "Publisher",
    "TopicSpec",
    "client_options",
    "ensure_topics",
    "start_client",
    "topic_specs",
]

log = structlog.get_logger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """The project's topics as it declares them (Strimzi's KafkaTopics mirror this)."""
    common = {
        "max.message.bytes": str(settings.max_message_bytes),
        "compression.type": "zstd",
        "min.insync.replicas": str(max(1, min(2, settings.replication_factor - 1))),
        "cleanup.policy": "delete",
    }
    retention = {
        settings.topics.callbacks: 7 * DAY_MS,
        settings.topics.notes: 7 * DAY_MS,
        settings.topics.dlq: 30 * DAY_MS,
        # A request not yet submitted is worth as much as a callback: the same week.
        settings.topics.requests: 7 * DAY_MS,
    }
    return [
        TopicSpec(
            name=name,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={**common, "retention.ms": str(ms)},
        )
        for name, ms in retention.items()
    ]


async def start_client(
    client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient, settings: KafkaSettings
) -> None:
    """Start an aiokafka client; on failure release it and say which cluster was not there."""
    try:
        await client.start()
    except KafkaError as exc:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc} "
            "(is the broker running and KAFKA_BOOTSTRAP_SERVERS right?)"
        ) from exc


def client_options(settings: KafkaSettings, role: str) -> dict[str, Any]:
    """Options every aiokafka client of ``role`` (ingest, processor, ...) is built with."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id_prefix}-{role}",
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get() if settings.sasl_password else None
        )
    return options


async def ensure_topics(settings: KafkaSettings, role: str, names: Sequence[str]) -> None:
    """Create the named project topics if they are missing (when ``create_topics`` is on),
    then check that every one of them exists and takes records as large as ours.

    Raises :class:`ConfigError` for a missing topic (with creation off) or one whose
    ``max.message.bytes`` is below ``KAFKA_MAX_MESSAGE_BYTES``: large callbacks would
    otherwise be refused one by one at run time.
    """
    specs = [spec for spec in topic_specs(settings) if spec.name in names]
    admin = AIOKafkaAdminClient(**client_options(settings, f"{role}-admin"))
    await start_client(admin, settings)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing and not settings.create_topics:
            raise ConfigError(
                f"topics {', '.join(s.name for s in missing)} do not exist and "
                "KAFKA_CREATE_TOPICS is false: create them (deploy/k8s has KafkaTopics)"
            )
        if missing:
            await _create(admin, missing)
        await _check_limits(admin, settings, [spec.name for spec in specs])
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    new = [
        NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.config)
        for spec in specs
    ]
    try:
        response = await admin.create_topics(new)
    except TopicAlreadyExistsError:
        return
    for topic, code, *_ in getattr(response, "topic_errors", ()):
        # 36 = TOPIC_ALREADY_EXISTS: another replica created it first.
        if code not in (0, 36):
            raise PublishError(f"could not create topic {topic}: error code {code}")
    log.info("topics_created", topics=[t.name for t in new])


async def _check_limits(
    admin: AIOKafkaAdminClient, settings: KafkaSettings, names: Sequence[str]
) -> None:
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})
        for name in names
    ]
    too_small = []
    for response in await admin.describe_configs(resources):
        for _error, _message, _type, topic, entries in response.resources:
            for name, value, *_ in entries:
                if name == "max.message.bytes" and int(value) < settings.max_message_bytes:
                    too_small.append(f"{topic} ({value})")
    if too_small:
        raise ConfigError(
            f"max.message.bytes of {', '.join(too_small)} is below KAFKA_MAX_MESSAGE_BYTES "
            f"({settings.max_message_bytes}): callbacks near the body limit would be refused. "
            "Raise the topic config (or lower INGEST_MAX_BODY_BYTES and KAFKA_MAX_MESSAGE_BYTES)"
        )


async def _force_close(producer: AIOKafkaProducer) -> None:
    """Close a producer whose flush cannot finish (aiokafka has no bounded close)."""
    sender = getattr(producer, "_sender", None)
    with contextlib.suppress(Exception):
        if sender is not None:
            await sender.close()
    with contextlib.suppress(Exception):
        await producer.client.close()


def _settled(released: Callable[[], None] | None) -> Callable[[asyncio.Future[Any]], None]:
    """A record's done-callback: reads the outcome (a late failure is not logged as never
    retrieved: its caller got its timeout already), then calls ``released``."""

    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()
        if released is not None:
            released()

    return done


@contextlib.contextmanager
def _publish_errors(topic: str, timeout: float | None) -> Iterator[None]:
    """The client's errors of one record's publish as ours, saying what happened to it."""
    try:
        yield
    except TimeoutError as exc:
        raise PublishTimeoutError(
            f"Kafka did not acknowledge the record on {topic} within {timeout} s"
        ) from exc
    except KafkaError as exc:
        raise PublishError(f"Kafka refused the record on {topic}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The broker's answer to one enqueued record (:meth:`Publisher.enqueue`)."""

    topic: str
    future: asyncio.Future[RecordMetadata]

    async def wait(self, timeout: float | None = None) -> RecordMetadata:  # noqa: ASYNC109
        """The record's metadata once acknowledged; :class:`PublishTimeoutError` after
        ``timeout`` seconds, :class:`PublishError` when Kafka refused or failed it."""
        with _publish_errors(self.topic, timeout):
            async with asyncio.timeout(timeout):
                # Shielded: a timeout leaves the record to the producer, as publish() does.
                return await asyncio.shield(self.future)


class Publisher:
    """An idempotent, ``acks=all`` producer: a record is published once Kafka says so."""

    def __init__(
        self,
        settings: KafkaSettings,
        role: str,
        *,
        linger_ms: int = 2,
        max_batch_size: int = 1024 * 1024,
    ) -> None:
        self._settings = settings
        self._role = role
        self._linger_ms = linger_ms
        # aiokafka keeps one open batch per partition and makes every other send() to that
        # partition wait until it is drained: with its 16 KiB default a 10 KB callback
        # fills a batch alone, so a produce request carried one record per partition.
        self._max_batch_size = min(max_batch_size, settings.max_message_bytes)
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **client_options(self._settings, self._role),
            acks="all",
            enable_idempotence=True,
            compression_type="zstd",
            max_request_size=self._settings.max_message_bytes,
            linger_ms=self._linger_ms,
            max_batch_size=self._max_batch_size,
            request_timeout_ms=30_000,
        )
        await start_client(producer, self._settings)
        self._producer = producer

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounds the flush
        """Flush what is pending and close, within ``timeout`` seconds.

        A producer whose broker is gone would flush forever. What cannot be flushed was never
        acknowledged to anyone (its ``publish()`` had not returned), so nothing promised is
        lost: an ingest sender got a 503 and retries, a consumer did not commit.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await producer.stop()
        except TimeoutError:
            log.error("producer_flush_timeout", role=self._role, seconds=timeout)
            await _force_close(producer)

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise NotStartedError(f"the {self._role} publisher is not started; call start()")
        return self._producer

    async def publish(
        self,
        topic: str,
        *,
        key: bytes,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - callers pass their own deadline
        released: Callable[[], None] | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for the broker's acknowledgement.

        Raises :class:`PublishTimeoutError` after ``timeout`` seconds, :class:`PublishError`
        when Kafka refuses or fails. ``released`` is called once the producer no longer
        holds the record (acknowledged, failed, or never queued), which may be after this
        call timed out: a queued record outlives its caller's deadline.
        """
        queued = False
        try:
            producer = self.producer
            with _publish_errors(topic, timeout):
                async with asyncio.timeout(timeout):
                    future = await producer.send(topic, value=value, key=key, headers=list(headers))
                    future.add_done_callback(_settled(released))
                    queued = True
                    # Shielded: a timeout must not cancel the record's future before the
                    # producer is done with the record, or ``released`` would come too early.
                    return await asyncio.shield(future)
        finally:
            if released is not None and not queued:
                released()

    async def enqueue(
        self,
        topic: str,
        *,
        key: bytes,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Acknowledgement:
        """Hand one record to the producer without waiting for the broker: records enqueued
        one after another keep that order on their partition (the producer is idempotent),
        while their acknowledgements overlap. The record is published once its
        :class:`Acknowledgement` is awaited without error.

        Raises :class:`PublishError` when the producer refuses the record outright.
        """
        with _publish_errors(topic, None):
            future = await self.producer.send(topic, value=value, key=key, headers=list(headers))
        future.add_done_callback(_settled(None))
        return Acknowledgement(topic, future)

    async def missing_topics(
        self,
        names: Sequence[str],
        *,
        timeout: float = 2.0,  # noqa: ASYNC109 - readiness probes must answer fast
    ) -> list[str]:
        """Which of ``names`` the cluster lacks, from fresh metadata.

        Raises :class:`PublishError` when no broker answers within ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                metadata = await self.producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishError(f"no Kafka broker answered a metadata request: {exc!r}") from exc
        known = metadata.topics()
        return [name for name in names if name not in known]
