"""The events on the wire as typed values, converted to and from Avro records at the edge."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from .avro import CALLBACK_SCHEMA, REQUEST_SCHEMA, load_codec

__all__ = [
    "KEPT_HEADERS",
    "CallbackEvent",
    "DeliverySource",
    "MidiRequest",
    "SignatureStatus",
    "delivery_key",
    "sha256_hex",
]

SignatureStatus = Literal["VERIFIED", "UNVERIFIED"]
#: How a body reached us: POSTed by the provider, or fetched from its record-info.
DeliverySource = Literal["CALLBACK", "POLL"]

#: Request headers the ingest copies into the event and the archiver into its sidecar.
#: Never signatures.
KEPT_HEADERS: Final = ("Content-Type", "User-Agent", "X-Webhook-Timestamp", "X-Request-Id")


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def delivery_key(task_id: str, body_sha256: str) -> str:
    """One delivery's identity: repeats of the same body for the same task share it."""
    return f"{task_id}:{body_sha256}"


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """A callback accepted by the ingest (schema ``suno.midi.v1.CallbackReceived``)."""

    task_id: str
    received_at: datetime
    body: bytes
    body_sha256: str
    code: int | None = None
    msg: str | None = None
    state: str | None = None
    signature: SignatureStatus = "UNVERIFIED"
    headers: dict[str, str] = field(default_factory=dict)
    replay: bool = False
    source: DeliverySource = "CALLBACK"
    request_id: str | None = None

    @property
    def delivery_key(self) -> str:
        return delivery_key(self.task_id, self.body_sha256)

    def to_record(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "delivery_key": self.delivery_key,
            "received_at": self.received_at,
            "code": self.code,
            "msg": self.msg,
            "state": self.state,
            "body": self.body,
            "body_sha256": self.body_sha256,
            "signature": self.signature,
            "headers": dict(self.headers),
            "replay": self.replay,
            "source": self.source,
            "request_id": self.request_id,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CallbackEvent:
        return cls(
            task_id=record["task_id"],
            received_at=_aware(record["received_at"]),
            body=record["body"],
            body_sha256=record["body_sha256"],
            code=record.get("code"),
            msg=record.get("msg"),
            state=record.get("state"),
            signature=record.get("signature", "UNVERIFIED"),
            headers=dict(record.get("headers") or {}),
            replay=bool(record.get("replay", False)),
            source=record.get("source", "CALLBACK"),
            request_id=record.get("request_id"),
        )

    def encode(self) -> bytes:
        return load_codec(CALLBACK_SCHEMA).encode(self.to_record())

    @classmethod
    def decode(cls, data: bytes) -> CallbackEvent:
        return cls.from_record(load_codec(CALLBACK_SCHEMA).decode(data))


@dataclass(frozen=True, slots=True)
class MidiRequest:
    """A request for one MIDI task (schema ``suno.midi.v1.MidiRequest``), for the tracker.

    ``request_id`` is the caller's idempotency key: the same id never creates two provider
    tasks, so a caller re-sends a request it is unsure of with the same id.
    """

    request_id: str
    source_task_id: str
    requested_at: datetime
    audio_id: str | None = None
    requested_by: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "source_task_id": self.source_task_id,
            "audio_id": self.audio_id,
            "requested_at": self.requested_at,
            "requested_by": self.requested_by,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MidiRequest:
        return cls(
            request_id=record["request_id"],
            source_task_id=record["source_task_id"],
            requested_at=_aware(record["requested_at"]),
            audio_id=record.get("audio_id"),
            requested_by=record.get("requested_by"),
        )

    def encode(self) -> bytes:
        return load_codec(REQUEST_SCHEMA).encode(self.to_record())

    @classmethod
    def decode(cls, data: bytes) -> MidiRequest:
        return cls.from_record(load_codec(REQUEST_SCHEMA).decode(data))


def _aware(moment: datetime) -> datetime:
    """Every timestamp in our events is UTC: a naive one (a record built by hand rather
    than decoded, which gives aware ones) is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
