"""The project's error hierarchy, in one place.

    PipelineError
    ├── ConfigError          bad configuration: the message names the variable
    ├── NotStartedError      a resource used before ``start()`` or after ``stop()``
    ├── CodecError           bytes that are not a message of a known schema
    │   └── UnknownSchemaError
    ├── PublishError         Kafka did not acknowledge a record
    │   ├── PublishTimeoutError
    │   └── KafkaUnavailableError  no broker answered when a client started
    └── StorageError         storage could not read or write
        └── ObjectNotFoundError

Third-party errors are converted where they enter (``raise PublishError(...) from exc``)
so callers handle our types only.
"""

from __future__ import annotations


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
