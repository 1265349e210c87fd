"""The provider's webhook signature scheme, as pure functions over headers, keys and a clock.

``X-Webhook-Signature = base64(HMAC-SHA256(key, taskId + "." + X-Webhook-Timestamp))``. The
body is not signed (FACTS.md), so a valid signature proves only who sent the task id and
when; binding a signature to one body is the dedupe store's job (``dedupe.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureRefused",
    "Signed",
    "Unsigned",
    "Verdict",
    "check_headers",
    "sign",
    "verify_signature",
]

TIMESTAMP_HEADER: Final = "X-Webhook-Timestamp"
SIGNATURE_HEADER: Final = "X-Webhook-Signature"

#: Longest header values worth looking at: a Unix time and a base64 SHA-256 digest.
_MAX_TIMESTAMP_CHARS: Final = 20
_MAX_SIGNATURE_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class Signed:
    """A request signed with one of the configured keys, within the tolerance."""

    timestamp: int
    signature: str


@dataclass(frozen=True, slots=True)
class Unsigned:
    """No key is configured (only with the INGEST_ALLOW_UNSIGNED opt-in): the request is
    accepted and its event marked UNVERIFIED."""


@dataclass(frozen=True, slots=True)
class SignatureRefused:
    """Why a request is refused with 401; ``stale`` separates clock problems from forgeries."""

    code: Literal["missing_signature", "invalid_timestamp", "stale_timestamp", "bad_signature"]
    message: str

    @property
    def stale(self) -> bool:
        return self.code == "stale_timestamp"


Verdict = Signed | Unsigned | SignatureRefused


def sign(key: bytes, task_id: str, timestamp: int | str) -> str:
    """The signature the provider sends for ``task_id`` at ``timestamp`` (tests, benchmark)."""
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def check_headers(
    headers: Mapping[str, str], *, keys: Sequence[bytes], now: int, tolerance: int
) -> SignatureRefused | None:
    """What can be refused before the body is read: headers missing, malformed or stale.

    The HMAC covers the task id, which is in the body, so only :func:`verify_signature`
    decides a signature is right; this spares reading a body that is refused anyway.
    ``None`` when no key is configured (nothing to check) or the headers may be right.
    """
    if not keys:
        return None
    parsed = _signature_headers(headers, now=now, tolerance=tolerance)
    return parsed if isinstance(parsed, SignatureRefused) else None


def verify_signature(
    headers: Mapping[str, str],
    task_id: str,
    *,
    keys: Sequence[bytes],
    now: int,
    tolerance: int,
) -> Verdict:
    """Check the signature headers against every key (rotation) and the clock.

    A timestamp exactly ``tolerance`` seconds away (either way) is accepted; one second more
    is refused. Digests are compared with :func:`hmac.compare_digest`, and every key is tried
    whatever the outcome of the previous ones, so timing tells nothing about which key
    nearly matched.
    """
    if not keys:
        return Unsigned()
    parsed = _signature_headers(headers, now=now, tolerance=tolerance)
    if isinstance(parsed, SignatureRefused):
        return parsed
    raw_timestamp, timestamp, presented = parsed
    message = f"{task_id}.{raw_timestamp}".encode()
    matched = False
    for key in keys:
        expected = hmac.new(key, message, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, presented)
    if not matched:
        return SignatureRefused(
            "bad_signature", "the signature does not match the task id and timestamp"
        )
    # Canonical form: base64 admits several spellings of one digest, and the binding of a
    # signature to one body must not be dodged by re-spelling it.
    return Signed(timestamp=timestamp, signature=base64.b64encode(presented).decode("ascii"))


def _signature_headers(
    headers: Mapping[str, str], *, now: int, tolerance: int
) -> SignatureRefused | tuple[str, int, bytes]:
    """The timestamp (as sent, and parsed) and the decoded digest, or why they are refused."""
    raw_timestamp = headers.get(TIMESTAMP_HEADER)
    raw_signature = headers.get(SIGNATURE_HEADER)
    if raw_timestamp is None or raw_signature is None:
        return SignatureRefused(
            "missing_signature",
            f"the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required",
        )
    timestamp = _parse_timestamp(raw_timestamp)
    if timestamp is None:
        return SignatureRefused(
            "invalid_timestamp", f"{TIMESTAMP_HEADER} must be a Unix time in whole seconds"
        )
    if abs(now - timestamp) > tolerance:
        return SignatureRefused(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is more than {tolerance} s away from the receiver's clock",
        )
    presented = _decode_signature(raw_signature)
    if presented is None:
        return SignatureRefused("bad_signature", f"{SIGNATURE_HEADER} is not valid base64")
    return raw_timestamp.strip(), timestamp, presented


def _parse_timestamp(raw: str) -> int | None:
    value = raw.strip()
    if not 0 < len(value) <= _MAX_TIMESTAMP_CHARS or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _decode_signature(raw: str) -> bytes | None:
    value = raw.strip()
    if not 0 < len(value) <= _MAX_SIGNATURE_CHARS or not value.isascii():
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
