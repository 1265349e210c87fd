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
    │   └── RegistryUnavailableError  the task registry's database did not answer
    ├── DeadLetter           a record that can never be handled; ``reason``      [dead letter]
    │   ├── InvalidEventError      an event the archive cannot name (hash, task id)
    │   └── EventEncodeError       a record our own code built does not fit its schema
    │                              (``unencodable_event``: our bug, not the input's)
    ├── CorruptArchiveError  an archived body does not hash to its name
    ├── RegistryError        the task registry refused an operation
    │   ├── MigrationError   the database's schema is not one this code can migrate
    │   └── UnknownTaskError no task has the task id or request id given
    ├── CommandError         a CLI problem the user can fix; ``status`` is the exit status
    ├── ProgramError         an external program (FluidSynth, MuseScore) is missing, failed
    │                        or ran out of time (services.common.programs); one line
    ├── InvalidRequestError  an HTTP request parameter the user can fix (services.console);
    │                        ``code`` names it in the 400 answer
    ├── ProviderError        the Suno API refused or did not answer (services.tracker.provider);
    │   │                    ``code``, ``endpoint``, ``attempts`` say which call and how often
    │   ├── ProviderRetryableError  may succeed later: retried with backoff, then raised
    │   │   ├── RateLimitedError       429, 430 (``retry_after`` when the answer said)
    │   │   ├── MaintenanceError       455
    │   │   ├── ProviderServerError    5xx
    │   │   └── ProviderNetworkError   no connection, or no answer to a GET
    │   ├── ProviderPermanentError  the request itself is refused (any other 4xx): no retry
    │   │   ├── ProviderBadRequestError  400
    │   │   ├── ProviderAuthError        401
    │   │   ├── InsufficientCreditsError 402 (or a 429 that says credits)
    │   │   ├── ProviderNotFoundError    404
    │   │   └── PayloadTooLargeError     413
    │   ├── OutcomeUnknownError    a generate that may have created a task: never resubmit
    │   └── ProviderAnswerError    an answer that is not the documented shape
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
    "InsufficientCreditsError",
    "InvalidEventError",
    "InvalidRequestError",
    "KafkaUnavailableError",
    "MaintenanceError",
    "MigrationError",
    "NotStartedError",
    "ObjectNotFoundError",
    "OutcomeUnknownError",
    "PayloadTooLargeError",
    "PipelineError",
    "ProgramError",
    "ProviderAnswerError",
    "ProviderAuthError",
    "ProviderBadRequestError",
    "ProviderError",
    "ProviderNetworkError",
    "ProviderNotFoundError",
    "ProviderPermanentError",
    "ProviderRetryableError",
    "ProviderServerError",
    "PublishError",
    "PublishTimeoutError",
    "RateLimitedError",
    "RegistryError",
    "RegistryUnavailableError",
    "StorageError",
    "Transient",
    "UnknownSchemaError",
    "UnknownTaskError",
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


class RegistryUnavailableError(Transient):
    """The task registry's PostgreSQL did not answer (down, unreachable, connection lost):
    what was asked may be asked again once it is back."""


class RegistryError(PipelineError):
    """The task registry refused an operation: retrying the same call will not help."""


class MigrationError(RegistryError):
    """The database's schema cannot be brought to this code's version: an applied migration
    was edited after it ran, or the database is newer than this code."""


class UnknownTaskError(RegistryError):
    """No task in the registry has the task id or request id given."""


class CommandError(PipelineError):
    """A problem the user can fix; printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class ProgramError(PipelineError):
    """An external program is missing, failed or ran out of time; the message is one line
    naming the program and what happened."""


class InvalidRequestError(PipelineError):
    """A request parameter the user can fix: answered 400 with ``code`` and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProviderError(PipelineError):
    """A call to the Suno API failed; the message says what happened and what to do.

    ``advice`` (one per class) is the "what to do" half, so every message built for a
    class ends the same way; ``code`` is the provider's code (from the body's ``code`` or
    the HTTP status), ``None`` where no answer came.
    """

    advice = "see the provider's status and the tracker's logs"

    def __init__(self, what: str, *, endpoint: str, attempts: int, code: int | None = None) -> None:
        tried = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(f"{endpoint}: {what} ({tried}); {self.advice}")
        self.endpoint = endpoint
        self.attempts = attempts
        self.code = code


class ProviderRetryableError(ProviderError):
    """The provider may accept the same call later; the client retries it with backoff."""

    advice = "the call is retried later; nothing to change"

    def __init__(
        self,
        what: str,
        *,
        endpoint: str,
        attempts: int,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(what, endpoint=endpoint, attempts=attempts, code=code)
        #: Seconds the provider asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after


class RateLimitedError(ProviderRetryableError):
    advice = (
        "retried later; if it persists, lower SUNO_API_RATE_LIMIT_REQUESTS or raise "
        "SUNO_API_RATE_LIMIT_WINDOW_SECONDS"
    )


class MaintenanceError(ProviderRetryableError):
    advice = "the provider is under maintenance; retried later, nothing to change"


class ProviderServerError(ProviderRetryableError):
    advice = "the provider failed; retried later, check its status page if it persists"


class ProviderNetworkError(ProviderRetryableError):
    advice = "retried later; check SUNO_API_BASE_URL and the network path to the provider"


class ProviderPermanentError(ProviderError):
    """The provider refused this very request: the same call fails again, so no retry."""

    advice = "the request is refused as it is: fix it before sending it again"


class ProviderBadRequestError(ProviderPermanentError):
    advice = "the request's parameters are invalid (task id, callback URL): fix them"


class ProviderAuthError(ProviderPermanentError):
    advice = "check SUNO_API_KEY"


class InsufficientCreditsError(ProviderPermanentError):
    advice = "top up the provider account's credits, then submit again"


class ProviderNotFoundError(ProviderPermanentError):
    advice = "the provider does not know this task (wrong id, or past its retention)"


class PayloadTooLargeError(ProviderPermanentError):
    advice = "the request is too large for the provider: shorten it"


class OutcomeUnknownError(ProviderError):
    """A ``generate`` the provider may or may not have acted on (a timeout or dropped
    connection after the request was sent, a 5xx, an unreadable success).

    The provider has no idempotency key, so sending it again could create a second task:
    the caller must not resubmit on its own but wait for the task to show itself (its
    callback) or hand it to an operator.
    """

    advice = (
        "the provider may have created the task: do not resubmit; wait for its callback "
        "or have an operator check the provider's records"
    )


class ProviderAnswerError(ProviderError):
    """The provider answered, but not in the documented shape: our reading is out of date
    or the answer is broken; retrying the same call is unlikely to help."""

    advice = "the provider's answer does not match its documentation: report it"
