"""The project's error hierarchy, in one place.

    PipelineError
    ├── ConfigError          bad configuration: the message names the variable
    ├── NotStartedError      a resource used before ``start()`` or after ``stop()``
    ├── CodecError           bytes that are not a message of a known schema      [dead letter]
    │   └── UnknownSchemaError
    ├── PublishError         Kafka did not acknowledge a record                  [retry]
    │   ├── PublishTimeoutError
    │   └── KafkaUnavailableError  no broker answered when a client started
    ├── StorageError         storage could not read or write                     [retry]
    │   ├── ObjectNotFoundError
    │   └── ArchiveStorageError    one step of archiving a callback; ``operation`` says which
    ├── Transient            a record that cannot be handled *yet*               [retry]
    ├── DeadLetter           a record that can never be handled; ``reason``      [dead letter]
    │   ├── InvalidEventError      an event the archive cannot name (hash, task id)
    │   └── EventEncodeError       a record our own code built does not fit its schema
    │                              (``unencodable_event``: our bug, not the input's)
    ├── CorruptArchiveError  an archived body does not hash to its name
    ├── CommandError         a CLI problem the user can fix; ``status`` is the exit status
    ├── DedupeUnavailable    (services.ingest.dedupe) the dedupe store did not answer:
    │                        the ingest accepts without dedupe or refuses (a setting)
    └── Refusal              (services.ingest.errors) a callback refused with an HTTP
                             status and a JSON error body; raised by the pure parts

The two ingest classes live beside the code that raises them (one needs aiohttp, the
other the dedupe store); every other class is defined here. The marks say what a
consumer does with a record whose handler raises the class: the policy lives in one
place, :mod:`services.common.consumer`, so handlers raise and never decide.
Third-party errors are converted where they enter (``raise PublishError(...) from exc``)
so callers handle our types only.
"""

from __future__ import annotations

__all__ = [
    "ArchiveStorageError",
    "CodecError",
    "CommandError",
    "ConfigError",
    "CorruptArchiveError",
    "DeadLetter",
    "EventEncodeError",
    "InvalidEventError",
    "KafkaUnavailableError",
    "NotStartedError",
    "ObjectNotFoundError",
    "PipelineError",
    "PublishError",
    "PublishTimeoutError",
    "StorageError",
    "Transient",
    "UnknownSchemaError",
]


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """The configuration is invalid; the message says which variable and what it expects."""


class NotStartedError(PipelineError):
    """A resource was used before it was started or after it was stopped."""


class CodecError(PipelineError):
    """Bytes that cannot be decoded as a message of the expected schema."""


class UnknownSchemaError(CodecError):
    """A single-object-encoded message whose schema fingerprint we do not know."""


class PublishError(PipelineError):
    """Kafka did not acknowledge a record."""


class PublishTimeoutError(PublishError):
    """Kafka did not acknowledge a record within the allowed time."""


class KafkaUnavailableError(PublishError):
    """No Kafka broker answered when a producer or consumer started."""


class StorageError(PipelineError):
    """Storage could not read or write an object."""


class ObjectNotFoundError(StorageError):
    """The object does not exist."""


class ArchiveStorageError(StorageError):
    """A storage step of archiving a callback failed; ``operation`` names the step, so the
    archiver's error metric can say which one without parsing messages."""

    def __init__(self, operation: str, cause: StorageError) -> None:
        super().__init__(str(cause))
        self.operation = operation


class Transient(PipelineError):
    """The record could not be handled *yet*: retry it, do not commit past it."""


class DeadLetter(PipelineError):
    """The record can never be handled: send it to the dead-letter topic.

    ``reason`` becomes the ``dlq.reason`` header and the dead-letter metric's label, so it
    comes from a small fixed set; the message becomes ``dlq.error``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidEventError(DeadLetter):
    """An event that must not be archived as it is (its body does not match its hash...)."""


class EventEncodeError(DeadLetter):
    """A record this project built does not fit its own schema, so it cannot be written.

    Not :class:`CodecError`: that one means the *input* record is undecodable, while here
    the input was fine and our code is wrong. No retry helps; the input is dead-lettered
    as ``unencodable_event`` to be re-sent once the code is fixed.
    """

    def __init__(self, message: str) -> None:
        super().__init__("unencodable_event", message)


class CorruptArchiveError(PipelineError):
    """An archived body does not hash to the name it is stored under."""


class CommandError(PipelineError):
    """A problem the user can fix; printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
