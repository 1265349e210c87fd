"""One frozen settings object, built once from the environment at each entry point.

No other module reads ``os.environ``: services receive a :class:`Settings` and pass the
parts they need down. Each field declares its environment variable, default, meaning and
bounds once, with :func:`setting`; :meth:`Settings.from_env`, :data:`VARIABLES` and
:data:`ENVIRONMENT` (the README's table, checked against the Kubernetes ConfigMaps) are
derived from those declarations, so they cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = [
    "COPIES_WHILE_PUBLISHED",
    "ENVIRONMENT",
    "EVENT_ENVELOPE_BYTES",
    "PRODUCER_COPIES",
    "VARIABLES",
    "ArchiverSettings",
    "ConsoleSettings",
    "IngestSettings",
    "KafkaSettings",
    "LogSettings",
    "ProcessorSettings",
    "Secret",
    "Settings",
    "StorageSettings",
    "TopicNames",
    "TrackerSettings",
    "Variable",
]

MiB = 1024 * 1024

#: The most a callback event adds to its body (task id, delivery key, the capped msg, state
#: and headers, Avro and Kafka framing): the ingest's ``build_event`` caps what it copies so
#: that the event stays within it, and a test encodes the worst case.
EVENT_ENVELOPE_BYTES = 256 * 1024
#: The producer's copies of a queued record: its batch and the batch compressed.
PRODUCER_COPIES = 2
#: How many times a body is held while it is published: the body, the encoded record,
#: and the producer's copies.
COPIES_WHILE_PUBLISHED = 2 + PRODUCER_COPIES

Backend = Literal["local", "s3"]
LogFormat = Literal["auto", "json", "console"]
RedisMode = Literal["standalone", "cluster", "sentinel"]
DedupeUnavailablePolicy = Literal["accept", "refuse"]
PreviewPolicy = Literal["auto", "on", "off"]
EventLoop = Literal["uvloop", "asyncio"]

_T = TypeVar("_T")


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
class _Declaration:
    name: str
    meaning: str
    minimum: int | None
    choices: tuple[str, ...]
    upper: bool


_DECLARATION = "environment"


def setting(
    name: str,
    default: _T,
    meaning: str,
    *,
    minimum: int | None = None,
    choices: tuple[str, ...] = (),
    upper: bool = False,
) -> _T:
    """A field read from the variable ``name``; its annotation says how to parse the value.

    ``Secret`` (and a tuple of them) marks the variable secret; a ``Literal`` annotation
    supplies ``choices``; ``upper`` accepts the choices in any case.
    """
    declaration = _Declaration(name, meaning, minimum, choices, upper)
    return field(default=default, metadata={_DECLARATION: declaration})


@dataclass(frozen=True)
class TopicNames:
    callbacks: str = setting(
        "KAFKA_TOPIC_CALLBACKS", "suno.midi.callbacks.v1", "ingest -> processor, archiver"
    )
    notes: str = setting("KAFKA_TOPIC_NOTES", "suno.midi.notes.v1", "processor -> downstream")
    dlq: str = setting("KAFKA_TOPIC_DLQ", "suno.midi.dlq.v1", "dead letters")
    requests: str = setting(
        "KAFKA_TOPIC_REQUESTS", "suno.midi.requests.v1", "MIDI task requests -> tracker"
    )


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated"
    )
    topics: TopicNames = field(default_factory=TopicNames)
    #: Off where an operator owns the topics.
    create_topics: bool = setting(
        "KAFKA_CREATE_TOPICS", True, "create the topics at start-up (idempotent)"
    )
    partitions: int = setting(
        "KAFKA_TOPIC_PARTITIONS", 6, "partitions of each topic the service creates", minimum=1
    )
    replication_factor: int = setting(
        "KAFKA_REPLICATION_FACTOR",
        1,
        "replication factor of each topic the service creates",
        minimum=1,
    )
    #: Must exceed the ingest body limit plus the event's envelope (see Settings.validate).
    max_message_bytes: int = setting(
        "KAFKA_MAX_MESSAGE_BYTES",
        16 * MiB,
        "largest record on every topic, producer, consumer",
        minimum=MiB,
    )
    client_id_prefix: str = setting(
        "KAFKA_CLIENT_ID_PREFIX", "suno-midi", "client.id prefix; the role is appended"
    )
    security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "how the clients reach the brokers",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    ssl_cafile: Path | None = setting(
        "KAFKA_SSL_CAFILE",
        None,
        "CA bundle for the brokers' TLS certificates (SSL, SASL_SSL; default: system CAs)",
    )
    sasl_mechanism: str | None = setting("KAFKA_SASL_MECHANISM", None, "e.g. SCRAM-SHA-512")
    sasl_username: str | None = setting("KAFKA_SASL_USERNAME", None, "SASL user")
    sasl_password: Secret | None = setting("KAFKA_SASL_PASSWORD", None, "SASL password")
    #: A consumer holding one record longer still polls (partitions paused), so it stays in
    #: its group; it is also the rebalance timeout the group waits for the member to rejoin.
    max_poll_interval_seconds: float = setting(
        "KAFKA_MAX_POLL_INTERVAL_SECONDS",
        300.0,
        "consumers: longest gap between polls before the member is dropped from its group",
        minimum=1,
    )
    #: One at a time, a consumer waits for each record's fsyncs in turn: 2-3x slower
    #: (bench/pipeline, docs/profiles/pipeline.md).
    consumer_concurrency: int = setting(
        "KAFKA_CONSUMER_CONCURRENCY",
        8,
        "consumers: records of a polled batch handled at once, those of one key in order; "
        "each partition's offset is committed past done records only",
        minimum=1,
    )


@dataclass(frozen=True)
class IngestSettings:
    host: str = setting("INGEST_HOST", "0.0.0.0", "ingest listen address")
    port: int = setting("INGEST_PORT", 8080, "ingest HTTP port", minimum=0)
    reuse_port: bool = setting(
        "INGEST_REUSE_PORT",
        False,
        "let several ingest processes listen on one port (SO_REUSEPORT, Linux): the kernel "
        "spreads connections over them, as a Service spreads them over pods",
    )
    webhook_secrets: tuple[Secret, ...] = setting(
        "SUNO_WEBHOOK_SECRETS", (), "webhook HMAC keys, comma-separated"
    )
    #: Without keys the ingest refuses to start unless this opt-in is set.
    allow_unsigned: bool = setting(
        "INGEST_ALLOW_UNSIGNED",
        False,
        "without SUNO_WEBHOOK_SECRETS, accept unsigned callbacks (marked UNVERIFIED) instead "
        "of refusing to start; local use only",
    )
    signature_tolerance_seconds: int = setting(
        "SIGNATURE_TOLERANCE_SECONDS",
        300,
        "accepted clock skew of X-Webhook-Timestamp",
        minimum=0,
    )
    max_body_bytes: int = setting(
        "INGEST_MAX_BODY_BYTES", 8 * MiB, "largest callback body accepted", minimum=1024
    )
    max_buffered_bytes: int = setting(
        "INGEST_MAX_BUFFERED_BYTES",
        192 * MiB,
        "bytes of callbacks held at once (bodies being read, events waiting for Kafka); "
        "past it, 503 + Retry-After before reading. Size it from the pod's memory limit",
        minimum=MiB,
    )
    max_json_depth: int = setting(
        "INGEST_MAX_JSON_DEPTH", 64, "deepest JSON nesting accepted", minimum=2
    )
    body_timeout_seconds: float = setting(
        "INGEST_BODY_TIMEOUT_SECONDS",
        5.0,
        "answer 408 when the body has not fully arrived by then (slow or stalled uploads)",
    )
    publish_timeout_seconds: float = setting(
        "INGEST_PUBLISH_TIMEOUT_SECONDS", 5.0, "answer 503 when Kafka has not acknowledged by then"
    )
    max_in_flight: int = setting(
        "INGEST_MAX_IN_FLIGHT", 1024, "publishes in flight before answering 503", minimum=1
    )
    retry_after_seconds: int = setting(
        "INGEST_RETRY_AFTER_SECONDS", 5, "Retry-After sent with 503", minimum=1
    )
    redis_url: Secret | None = setting(
        "REDIS_URL", None, "Redis for dedupe across replicas (empty: in-process store)"
    )
    redis_mode: RedisMode = setting(
        "REDIS_MODE",
        "standalone",
        "what REDIS_URL names: one server; Cluster seed nodes; the Sentinels (docs/ingest.md)",
    )
    redis_sentinel_master: str = setting(
        "REDIS_SENTINEL_MASTER", "mymaster", "the primary the Sentinels watch (REDIS_MODE=sentinel)"
    )
    dedupe_unavailable: DedupeUnavailablePolicy = setting(
        "INGEST_DEDUPE_UNAVAILABLE",
        "accept",
        "what a callback gets while Redis does not answer: published without dedupe; 503",
    )
    dedupe_window_seconds: int = setting(
        "DEDUPE_WINDOW_SECONDS", 14 * 24 * 3600, "how long a delivery is remembered", minimum=1
    )
    shutdown_grace_seconds: float = setting(
        "INGEST_SHUTDOWN_GRACE_SECONDS", 10.0, "time in-flight requests get on SIGTERM"
    )
    event_loop: EventLoop = setting(
        "INGEST_EVENT_LOOP",
        "uvloop",
        "the ingest's event loop; uvloop (libuv's) spends ~5 % less CPU per callback",
    )


@dataclass(frozen=True)
class StorageSettings:
    backend: Backend = setting(
        "STORAGE_BACKEND", "local", "where MIDI files and raw callbacks are kept"
    )
    data_dir: Path = setting(
        "DATA_DIR", Path("./data"), "local storage root: midi/ and raw/ below it"
    )
    s3_endpoint_url: str | None = setting(
        "S3_ENDPOINT_URL", None, "S3-compatible endpoint (empty: AWS)"
    )
    s3_bucket: str | None = setting("S3_BUCKET", None, "bucket for midi/ and raw/")
    s3_prefix: str = setting("S3_PREFIX", "", "key prefix inside the bucket")
    s3_region: str | None = setting("S3_REGION", None, "region name")


@dataclass(frozen=True)
class ProcessorSettings:
    host: str = setting("PROCESSOR_HOST", "0.0.0.0", "processor health/metrics listen address")
    port: int = setting("PROCESSOR_PORT", 8081, "processor health/metrics port", minimum=0)
    group_id: str = setting("PROCESSOR_GROUP_ID", "suno-midi-processor", "processor consumer group")
    require_verified: bool = setting(
        "PROCESSOR_REQUIRE_VERIFIED",
        True,
        "dead-letter (reason unverified) events the ingest accepted unsigned: they write no file",
    )
    quantized_file: bool = setting(
        "PROCESSOR_QUANTIZED_FILE",
        False,
        "also write each MIDI file's quantized variant (midi/<task>.quantized.mid): every note "
        "snapped to PROCESSOR_QUANTIZE_GRID; the exact file stays as it is",
    )
    quantize_grid: Literal["1/4", "1/8", "1/8t", "1/16", "1/16t", "1/32", "1/32t", "1/64"] = (
        setting("PROCESSOR_QUANTIZE_GRID", "1/16", "the quantized variant's grid (t: triplets)")
    )
    previews: PreviewPolicy = setting(
        "PROCESSOR_PREVIEWS",
        "auto",
        "audio preview (Ogg Vorbis) beside each MIDI file: auto = when FluidSynth and the "
        "SoundFont are found, on = refuse to start without them, off",
    )
    fluidsynth: str = setting(
        "PROCESSOR_FLUIDSYNTH", "fluidsynth", "FluidSynth program (a name on PATH or a path)"
    )
    soundfont: Path = setting(
        "PROCESSOR_SOUNDFONT",
        Path("/usr/share/sounds/sf2/default-GM.sf2"),
        "General MIDI SoundFont of the previews (Debian's default: Fluid R3 when installed)",
    )
    preview_timeout_seconds: float = setting(
        "PROCESSOR_PREVIEW_TIMEOUT_SECONDS",
        60.0,
        "longest a preview may take: past it the task's record completes without one",
        minimum=1,
    )


@dataclass(frozen=True)
class ArchiverSettings:
    host: str = setting("ARCHIVER_HOST", "0.0.0.0", "archiver health/metrics listen address")
    port: int = setting("ARCHIVER_PORT", 8082, "archiver health/metrics port", minimum=0)
    group_id: str = setting("ARCHIVER_GROUP_ID", "suno-midi-archiver", "archiver consumer group")


@dataclass(frozen=True)
class TrackerSettings:
    host: str = setting("TRACKER_HOST", "0.0.0.0", "tracker HTTP listen address")
    port: int = setting("TRACKER_PORT", 8083, "tracker HTTP port (submit API, health)", minimum=0)
    group_id: str = setting("TRACKER_GROUP_ID", "suno-midi-tracker", "tracker consumer group")
    database_url: Secret | None = setting(
        "DATABASE_URL", None, "PostgreSQL URL of the task registry (postgresql://...)"
    )
    api_base_url: str = setting(
        "SUNO_API_BASE_URL", "https://api.sunoapi.org", "the provider's API base URL"
    )
    api_key: Secret | None = setting("SUNO_API_KEY", None, "the provider's API key (Bearer)")
    callback_url: str | None = setting(
        "TRACKER_CALLBACK_URL",
        None,
        "our ingest's public callback URL, given to the provider with each task",
    )
    api_tokens: tuple[Secret, ...] = setting(
        "TRACKER_API_TOKENS", (), "bearer tokens accepted by the submit endpoint, comma-separated"
    )
    api_timeout_seconds: float = setting(
        "SUNO_API_TIMEOUT_SECONDS", 30.0, "timeout of one provider request", minimum=1
    )
    api_max_attempts: int = setting(
        "SUNO_API_MAX_ATTEMPTS", 5, "attempts of one provider call on retryable errors", minimum=1
    )
    api_backoff_seconds: float = setting(
        "SUNO_API_BACKOFF_SECONDS", 1.0, "first retry delay (doubled each time, jittered)"
    )
    api_backoff_max_seconds: float = setting(
        "SUNO_API_BACKOFF_MAX_SECONDS", 30.0, "longest retry delay", minimum=0
    )
    rate_limit_requests: int = setting(
        "SUNO_API_RATE_LIMIT_REQUESTS",
        20,
        "provider requests allowed per window, all tracker replicas together",
        minimum=1,
    )
    rate_limit_window_seconds: float = setting(
        "SUNO_API_RATE_LIMIT_WINDOW_SECONDS", 10.0, "the rate limit's window", minimum=0
    )
    poll_after_seconds: int = setting(
        "TRACKER_POLL_AFTER_SECONDS",
        300,
        "a submitted task with no terminal callback this long is polled with record-info",
        minimum=0,
    )
    poll_interval_seconds: int = setting(
        "TRACKER_POLL_INTERVAL_SECONDS",
        15,
        "first interval between polls of one task (doubled up to the maximum)",
        minimum=1,
    )
    poll_max_interval_seconds: int = setting(
        "TRACKER_POLL_MAX_INTERVAL_SECONDS", 1800, "longest interval between polls", minimum=1
    )
    retention_days: int = setting(
        "TRACKER_RETENTION_DAYS",
        14,
        "the provider keeps results this long: a task with none by then is expired",
        minimum=1,
    )
    expiry_warning_days: int = setting(
        "TRACKER_EXPIRY_WARNING_DAYS",
        3,
        "a non-terminal task this close to expiry counts as at risk (and alerts)",
        minimum=0,
    )
    lease_seconds: int = setting(
        "TRACKER_LEASE_SECONDS", 60, "how long a replica holds a task it polls", minimum=1
    )


@dataclass(frozen=True)
class ConsoleSettings:
    host: str = setting("CONSOLE_HOST", "0.0.0.0", "console (task browser) HTTP listen address")
    port: int = setting(
        "CONSOLE_PORT", 8084, "console HTTP port (pages, read API, health)", minimum=0
    )
    operator_tokens: tuple[Secret, ...] = setting(
        "CONSOLE_OPERATOR_TOKENS",
        (),
        "bearer tokens accepted for console actions (replay), comma-separated",
    )
    operator_credentials: tuple[Secret, ...] = setting(
        "CONSOLE_OPERATOR_CREDENTIALS",
        (),
        "basic-auth user:password pairs accepted for console actions, comma-separated",
    )
    trusted_identity_header: str = setting(
        "CONSOLE_TRUSTED_IDENTITY_HEADER",
        "",
        "header naming the operator, set by an authenticating proxy that strips it from "
        "clients (e.g. X-Forwarded-User); empty = off",
    )
    read_only: bool = setting(
        "CONSOLE_READ_ONLY", False, "refuse every console action (403 read_only)"
    )
    metrics_urls: str = setting(
        "CONSOLE_METRICS_URLS",
        "",
        "the health strip's sources: name=url pairs, comma-separated, of the services' "
        "/metrics (processor, archiver, tracker, ingest); unused when CONSOLE_PROMETHEUS_URL "
        "is set; empty: not configured",
    )
    prometheus_url: str | None = setting(
        "CONSOLE_PROMETHEUS_URL",
        None,
        "Prometheus to read the health strip from (its rate() over 5 minutes) instead of "
        "scraping the services",
    )
    health_timeout_seconds: float = setting(
        "CONSOLE_HEALTH_TIMEOUT_SECONDS",
        2.0,
        "how long the health strip waits for one service's /metrics or one Prometheus query",
    )
    dlq_group_id: str = setting(
        "CONSOLE_DLQ_GROUP_ID",
        "suno-midi-console-dlq",
        "consumer group of the console's dead-letter indexer (dead letters into the registry)",
    )
    notes_cache_bytes: int = setting(
        "CONSOLE_NOTES_CACHE_BYTES",
        64 * 1024 * 1024,
        "bytes of piano-roll notes documents one console keeps in memory, newest used first "
        "(an archived body's document is made once, not per view); 0 = off",
        minimum=0,
    )


@dataclass(frozen=True)
class LogSettings:
    level: str = setting(
        "LOG_LEVEL",
        "INFO",
        "lowest level logged",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        upper=True,
    )
    format: LogFormat = setting(
        "LOG_FORMAT", "auto", "auto is console output on a terminal, JSON lines elsewhere"
    )


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    processor: ProcessorSettings = field(default_factory=ProcessorSettings)
    archiver: ArchiverSettings = field(default_factory=ArchiverSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment).

        Raises :class:`ConfigError` naming the variable and what it expects.
        """
        settings = _build(cls, os.environ if environ is None else environ)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the rules that tie settings together."""
        envelope = EVENT_ENVELOPE_BYTES
        if self.kafka.max_message_bytes < self.ingest.max_body_bytes + envelope:
            raise ConfigError(
                f"KAFKA_MAX_MESSAGE_BYTES ({self.kafka.max_message_bytes}) must be at least "
                f"INGEST_MAX_BODY_BYTES ({self.ingest.max_body_bytes}) + {envelope} so that "
                "every accepted callback fits in one Kafka record"
            )
        held = COPIES_WHILE_PUBLISHED * self.ingest.max_body_bytes
        if self.ingest.max_buffered_bytes < held:
            raise ConfigError(
                f"INGEST_MAX_BUFFERED_BYTES ({self.ingest.max_buffered_bytes}) must be at least "
                f"{COPIES_WHILE_PUBLISHED} x INGEST_MAX_BODY_BYTES ({held}): a body at the limit "
                f"is held {COPIES_WHILE_PUBLISHED} times while it is published"
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


def _whole_number(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _flag(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _secrets(_name: str, raw: str) -> tuple[Secret, ...]:
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


#: How a variable's text becomes a field's value, by the field's type (``None`` aside).
_PARSERS: dict[object, Callable[[str, str], Any]] = {
    str: lambda _name, raw: raw,
    int: _whole_number,
    float: _number,
    bool: _flag,
    Path: lambda _name, raw: Path(raw),
    Secret: lambda _name, raw: Secret(raw),
    tuple[Secret, ...]: _secrets,
}
_SECRET_TYPES = (Secret, tuple[Secret, ...])


@dataclass(frozen=True)
class Variable:
    """One environment variable, as its field declares it: how to read it and to document it."""

    name: str
    default: Any
    meaning: str
    parse: Callable[[str, str], Any]
    secret: bool = False
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    upper: bool = False

    @classmethod
    def of(cls, declared: Field[Any], annotation: Any) -> Variable:
        """The variable of a field made with :func:`setting`, typed by its annotation."""
        declaration: _Declaration = declared.metadata[_DECLARATION]
        kind = _without_none(annotation)
        choices = declaration.choices
        if get_origin(kind) is Literal:
            kind, choices = str, tuple(get_args(kind))
        if kind not in _PARSERS:
            raise TypeError(f"{declaration.name}: no parser for {annotation!r}")
        return cls(
            name=declaration.name,
            default=declared.default,
            meaning=declaration.meaning,
            parse=_PARSERS[kind],
            secret=kind in _SECRET_TYPES,
            minimum=declaration.minimum,
            choices=choices,
            upper=declaration.upper,
        )

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value from ``environ``; the default when unset or blank."""
        raw = (environ.get(self.name) or "").strip()
        if not raw:
            return self.default
        if self.choices:
            return self._choose(raw)
        value = self.parse(self.name, raw)
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} must be at least {self.minimum}, got {value}")
        return value

    def _choose(self, raw: str) -> str:
        value = raw.upper() if self.upper else raw
        if value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, got {raw!r}")
        return value

    @property
    def default_text(self) -> str:
        """The default as one would write it in the environment; empty when there is none."""
        value = self.default
        if value is None or value == () or self.secret:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, Path) and not value.is_absolute():
            return f"./{value}"
        return str(value)

    @property
    def documented(self) -> str:
        """The meaning, after the accepted values when there is a fixed set of them."""
        if not self.choices:
            return self.meaning
        *rest, last = self.choices
        return f"{', '.join(rest)} or {last}: {self.meaning}"


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None``: an optional setting is ``None`` (its default) when unset."""
    if isinstance(annotation, UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not NoneType]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


def _members(group: type[Any]) -> Iterator[tuple[str, Variable | type[Any]]]:
    """Each field of a settings group: its variable, or the class of the nested group."""
    annotations = get_type_hints(group)
    for member in fields(group):
        annotation = annotations[member.name]
        if _DECLARATION in member.metadata:
            yield member.name, Variable.of(member, annotation)
        elif is_dataclass(annotation) and isinstance(annotation, type):
            yield member.name, annotation
        else:
            raise TypeError(f"{group.__name__}.{member.name} is neither a setting nor a group")


def _build(group: type[_T], environ: Mapping[str, str]) -> _T:
    values = {
        name: member.read(environ) if isinstance(member, Variable) else _build(member, environ)
        for name, member in _members(group)
    }
    return group(**values)


def _variables(group: type[Any]) -> Iterator[Variable]:
    for _, member in _members(group):
        if isinstance(member, Variable):
            yield member
        else:
            yield from _variables(member)


#: Every variable the services read, in the order of the fields that declare them.
VARIABLES: tuple[Variable, ...] = tuple(_variables(Settings))

#: ``(name, default as text, meaning)`` per variable: the README's configuration table.
ENVIRONMENT: tuple[tuple[str, str, str], ...] = tuple(
    (variable.name, variable.default_text, variable.documented) for variable in VARIABLES
)
