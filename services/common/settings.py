"""One frozen settings object, built once from the environment at each entry point.

No other module reads ``os.environ``: services receive a :class:`Settings` and pass the
parts they need down. Every variable, its default and its meaning is listed in
:data:`ENVIRONMENT` so the README, the Kubernetes ConfigMaps and this module agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from .errors import ConfigError

__all__ = [
    "ENVIRONMENT",
    "ArchiverSettings",
    "IngestSettings",
    "KafkaSettings",
    "LogSettings",
    "ProcessorSettings",
    "Secret",
    "Settings",
    "StorageSettings",
    "TopicNames",
]

MiB = 1024 * 1024

Backend = Literal["local", "s3"]
LogFormat = Literal["auto", "json", "console"]


class Secret:
    """A value that must never be printed: ``repr`` and ``str`` hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TopicNames:
    callbacks: str = "suno.midi.callbacks.v1"
    notes: str = "suno.midi.notes.v1"
    dlq: str = "suno.midi.dlq.v1"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = field(default_factory=TopicNames)
    #: Create the three topics at start-up (idempotent). Off where an operator owns them.
    create_topics: bool = True
    partitions: int = 6
    replication_factor: int = 1
    #: Largest record the topics, the producer and the consumers accept. Must exceed the
    #: ingest body limit plus the event's envelope.
    max_message_bytes: int = 16 * MiB
    client_id_prefix: str = "suno-midi"
    security_protocol: str = "PLAINTEXT"
    #: CA bundle that signs the brokers' certificates (SSL, SASL_SSL); default: system CAs.
    ssl_cafile: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None


@dataclass(frozen=True)
class IngestSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    webhook_secrets: tuple[Secret, ...] = ()
    signature_tolerance_seconds: int = 300
    max_body_bytes: int = 8 * MiB
    max_json_depth: int = 64
    body_timeout_seconds: float = 5.0
    publish_timeout_seconds: float = 5.0
    max_in_flight: int = 1024
    retry_after_seconds: int = 5
    redis_url: Secret | None = None
    dedupe_window_seconds: int = 14 * 24 * 3600
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True)
class StorageSettings:
    backend: Backend = "local"
    data_dir: Path = Path("./data")
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None


@dataclass(frozen=True)
class ProcessorSettings:
    host: str = "0.0.0.0"
    port: int = 8081
    group_id: str = "suno-midi-processor"


@dataclass(frozen=True)
class ArchiverSettings:
    host: str = "0.0.0.0"
    port: int = 8082
    group_id: str = "suno-midi-archiver"


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    #: ``auto`` is readable output on a terminal and JSON lines everywhere else.
    format: LogFormat = "auto"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    processor: ProcessorSettings = field(default_factory=ProcessorSettings)
    archiver: ArchiverSettings = field(default_factory=ArchiverSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment).

        Raises :class:`ConfigError` naming the variable and what it expects.
        """
        env = _Env(os.environ if environ is None else environ)
        topics = TopicNames(
            callbacks=env.text("KAFKA_TOPIC_CALLBACKS", TopicNames.callbacks),
            notes=env.text("KAFKA_TOPIC_NOTES", TopicNames.notes),
            dlq=env.text("KAFKA_TOPIC_DLQ", TopicNames.dlq),
        )
        kafka = KafkaSettings(
            bootstrap_servers=env.text("KAFKA_BOOTSTRAP_SERVERS", KafkaSettings.bootstrap_servers),
            topics=topics,
            create_topics=env.flag("KAFKA_CREATE_TOPICS", KafkaSettings.create_topics),
            partitions=env.integer("KAFKA_TOPIC_PARTITIONS", KafkaSettings.partitions, minimum=1),
            replication_factor=env.integer(
                "KAFKA_REPLICATION_FACTOR", KafkaSettings.replication_factor, minimum=1
            ),
            max_message_bytes=env.integer(
                "KAFKA_MAX_MESSAGE_BYTES", KafkaSettings.max_message_bytes, minimum=MiB
            ),
            client_id_prefix=env.text("KAFKA_CLIENT_ID_PREFIX", KafkaSettings.client_id_prefix),
            security_protocol=env.choice(
                "KAFKA_SECURITY_PROTOCOL",
                KafkaSettings.security_protocol,
                ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
            ),
            ssl_cafile=_optional_path(env.optional("KAFKA_SSL_CAFILE")),
            sasl_mechanism=env.optional("KAFKA_SASL_MECHANISM"),
            sasl_username=env.optional("KAFKA_SASL_USERNAME"),
            sasl_password=env.secret("KAFKA_SASL_PASSWORD"),
        )
        ingest = IngestSettings(
            host=env.text("INGEST_HOST", IngestSettings.host),
            port=env.integer("INGEST_PORT", IngestSettings.port, minimum=0),
            webhook_secrets=env.secrets("SUNO_WEBHOOK_SECRETS"),
            signature_tolerance_seconds=env.integer(
                "SIGNATURE_TOLERANCE_SECONDS", IngestSettings.signature_tolerance_seconds, minimum=0
            ),
            max_body_bytes=env.integer(
                "INGEST_MAX_BODY_BYTES", IngestSettings.max_body_bytes, minimum=1024
            ),
            max_json_depth=env.integer(
                "INGEST_MAX_JSON_DEPTH", IngestSettings.max_json_depth, minimum=2
            ),
            body_timeout_seconds=env.number(
                "INGEST_BODY_TIMEOUT_SECONDS", IngestSettings.body_timeout_seconds
            ),
            publish_timeout_seconds=env.number(
                "INGEST_PUBLISH_TIMEOUT_SECONDS", IngestSettings.publish_timeout_seconds
            ),
            max_in_flight=env.integer(
                "INGEST_MAX_IN_FLIGHT", IngestSettings.max_in_flight, minimum=1
            ),
            retry_after_seconds=env.integer(
                "INGEST_RETRY_AFTER_SECONDS", IngestSettings.retry_after_seconds, minimum=1
            ),
            redis_url=env.secret("REDIS_URL"),
            dedupe_window_seconds=env.integer(
                "DEDUPE_WINDOW_SECONDS", IngestSettings.dedupe_window_seconds, minimum=1
            ),
            shutdown_grace_seconds=env.number(
                "INGEST_SHUTDOWN_GRACE_SECONDS", IngestSettings.shutdown_grace_seconds
            ),
        )
        storage = StorageSettings(
            backend=cast(
                Backend, env.choice("STORAGE_BACKEND", StorageSettings.backend, ("local", "s3"))
            ),
            data_dir=Path(env.text("DATA_DIR", "./data")),
            s3_endpoint_url=env.optional("S3_ENDPOINT_URL"),
            s3_bucket=env.optional("S3_BUCKET"),
            s3_prefix=env.text("S3_PREFIX", ""),
            s3_region=env.optional("S3_REGION"),
        )
        processor = ProcessorSettings(
            host=env.text("PROCESSOR_HOST", ProcessorSettings.host),
            port=env.integer("PROCESSOR_PORT", ProcessorSettings.port, minimum=0),
            group_id=env.text("PROCESSOR_GROUP_ID", ProcessorSettings.group_id),
        )
        archiver = ArchiverSettings(
            host=env.text("ARCHIVER_HOST", ArchiverSettings.host),
            port=env.integer("ARCHIVER_PORT", ArchiverSettings.port, minimum=0),
            group_id=env.text("ARCHIVER_GROUP_ID", ArchiverSettings.group_id),
        )
        log = LogSettings(
            level=env.choice(
                "LOG_LEVEL", LogSettings.level, ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            format=cast(
                LogFormat,
                env.choice("LOG_FORMAT", LogSettings.format, ("auto", "json", "console")),
            ),
        )
        settings = cls(
            kafka=kafka,
            ingest=ingest,
            storage=storage,
            processor=processor,
            archiver=archiver,
            log=log,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the rules that tie settings together."""
        envelope = 256 * 1024
        if self.kafka.max_message_bytes < self.ingest.max_body_bytes + envelope:
            raise ConfigError(
                f"KAFKA_MAX_MESSAGE_BYTES ({self.kafka.max_message_bytes}) must be at least "
                f"INGEST_MAX_BODY_BYTES ({self.ingest.max_body_bytes}) + {envelope} so that "
                "every accepted callback fits in one Kafka record"
            )
        if self.storage.backend == "s3" and not self.storage.s3_bucket:
            raise ConfigError("STORAGE_BACKEND=s3 needs S3_BUCKET (and S3_ENDPOINT_URL off AWS)")
        if not 0 < self.ingest.publish_timeout_seconds < 15:
            raise ConfigError(
                "INGEST_PUBLISH_TIMEOUT_SECONDS must be above 0 and well below the "
                "sender's 15 s timeout"
            )
        if not self.ingest.body_timeout_seconds > 0:
            raise ConfigError("INGEST_BODY_TIMEOUT_SECONDS must be above 0")
        if self.ingest.body_timeout_seconds + self.ingest.publish_timeout_seconds >= 15:
            raise ConfigError(
                "INGEST_BODY_TIMEOUT_SECONDS + INGEST_PUBLISH_TIMEOUT_SECONDS must stay below "
                "the sender's 15 s timeout (a slow upload and a slow Kafka can add up)"
            )

    def with_overrides(self, **groups: Any) -> Settings:
        """Return a copy with whole groups or group fields replaced (tests, dev runner).

        ``settings.with_overrides(ingest={"port": 0})`` replaces one field of one group.
        """
        changes: dict[str, Any] = {}
        for name, value in groups.items():
            current = getattr(self, name)
            changes[name] = replace(current, **value) if isinstance(value, dict) else value
        return replace(self, **changes)


#: Every variable the services read, with its default and meaning (rendered in the README).
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated"),
    ("KAFKA_CREATE_TOPICS", "true", "create the topics at start-up (idempotent)"),
    ("KAFKA_TOPIC_PARTITIONS", "6", "partitions of each topic the service creates"),
    ("KAFKA_REPLICATION_FACTOR", "1", "replication factor of each topic the service creates"),
    ("KAFKA_MAX_MESSAGE_BYTES", "16777216", "largest record on every topic, producer, consumer"),
    ("KAFKA_TOPIC_CALLBACKS", "suno.midi.callbacks.v1", "ingest -> processor, archiver"),
    ("KAFKA_TOPIC_NOTES", "suno.midi.notes.v1", "processor -> downstream"),
    ("KAFKA_TOPIC_DLQ", "suno.midi.dlq.v1", "dead letters"),
    ("KAFKA_CLIENT_ID_PREFIX", "suno-midi", "client.id prefix; the role is appended"),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("KAFKA_SSL_CAFILE", "", "CA bundle for the brokers' TLS certificates (default: system CAs)"),
    ("KAFKA_SASL_MECHANISM", "", "e.g. SCRAM-SHA-512"),
    ("KAFKA_SASL_USERNAME", "", "SASL user"),
    ("KAFKA_SASL_PASSWORD", "", "SASL password (secret)"),
    ("DATA_DIR", "./data", "local storage root: midi/ and raw/ below it"),
    ("STORAGE_BACKEND", "local", "local or s3"),
    ("S3_ENDPOINT_URL", "", "S3-compatible endpoint (empty: AWS)"),
    ("S3_BUCKET", "", "bucket for midi/ and raw/"),
    ("S3_PREFIX", "", "key prefix inside the bucket"),
    ("S3_REGION", "", "region name"),
    ("INGEST_HOST", "0.0.0.0", "ingest listen address"),
    ("INGEST_PORT", "8080", "ingest HTTP port"),
    ("SUNO_WEBHOOK_SECRETS", "", "webhook HMAC keys, comma-separated (secret)"),
    ("SIGNATURE_TOLERANCE_SECONDS", "300", "accepted clock skew of X-Webhook-Timestamp"),
    ("INGEST_MAX_BODY_BYTES", "8388608", "largest callback body accepted"),
    ("INGEST_MAX_JSON_DEPTH", "64", "deepest JSON nesting accepted"),
    (
        "INGEST_BODY_TIMEOUT_SECONDS",
        "5",
        "answer 408 when the body has not fully arrived by then (slow or stalled uploads)",
    ),
    ("INGEST_PUBLISH_TIMEOUT_SECONDS", "5", "answer 503 when Kafka has not acknowledged by then"),
    ("INGEST_MAX_IN_FLIGHT", "1024", "publishes in flight before answering 503"),
    ("INGEST_RETRY_AFTER_SECONDS", "5", "Retry-After sent with 503"),
    ("REDIS_URL", "", "Redis for dedupe across replicas (empty: in-process store)"),
    ("DEDUPE_WINDOW_SECONDS", "1209600", "how long a delivery is remembered"),
    ("INGEST_SHUTDOWN_GRACE_SECONDS", "10", "time in-flight requests get on SIGTERM"),
    ("PROCESSOR_HOST", "0.0.0.0", "processor health/metrics listen address"),
    ("PROCESSOR_PORT", "8081", "processor health/metrics port"),
    ("PROCESSOR_GROUP_ID", "suno-midi-processor", "processor consumer group"),
    ("ARCHIVER_HOST", "0.0.0.0", "archiver health/metrics listen address"),
    ("ARCHIVER_PORT", "8082", "archiver health/metrics port"),
    ("ARCHIVER_GROUP_ID", "suno-midi-archiver", "archiver consumer group"),
    ("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    ("LOG_FORMAT", "auto", "auto (console on a terminal, else JSON), json or console"),
)


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


class _Env:
    """Typed reads of one environment mapping, each failing with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        raw = self._raw(name)
        return default if raw is None else raw

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def secret(self, name: str) -> Secret | None:
        raw = self._raw(name)
        return None if raw is None else Secret(raw)

    def secrets(self, name: str) -> tuple[Secret, ...]:
        raw = self._raw(name)
        if raw is None:
            return ()
        return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def choice(
        self, name: str, default: str, choices: tuple[str, ...], *, upper: bool = False
    ) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value
