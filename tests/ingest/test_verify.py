"""The signature scheme as pure functions: keys, rotation, clock edges, malformed headers."""

from __future__ import annotations

import base64

import pytest

from services.ingest.verify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRefused,
    Signed,
    Unsigned,
    sign,
    verify_signature,
)

NOW = 1_760_335_255
OLD, NEW = b"old-key", b"new-key"


def headers(task_id: str, timestamp: int | str, key: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(key, task_id, timestamp)}


def check(h: dict[str, str], *, keys: tuple[bytes, ...] = (NEW,), task_id: str = "t1"):
    return verify_signature(h, task_id, keys=keys, now=NOW, tolerance=300)


class TestVerifySignature:
    def test_known_vector(self) -> None:
        """The signature is base64(HMAC-SHA256(key, taskId + "." + timestamp))."""
        import hashlib
        import hmac

        digest = hmac.new(b"k", b"abc.1700000000", hashlib.sha256).digest()
        assert sign(b"k", "abc", 1700000000) == base64.b64encode(digest).decode()

    def test_valid_signature_is_signed(self) -> None:
        """A signature made with the configured key verifies."""
        verdict = check(headers("t1", NOW, NEW))
        assert isinstance(verdict, Signed) and verdict.timestamp == NOW

    def test_any_configured_key_verifies(self) -> None:
        """During rotation both the old and the new key are accepted."""
        assert isinstance(check(headers("t1", NOW, OLD), keys=(NEW, OLD)), Signed)
        assert isinstance(check(headers("t1", NOW, NEW), keys=(NEW, OLD)), Signed)

    def test_retired_key_is_refused(self) -> None:
        """Once the old key is removed, its signatures fail."""
        verdict = check(headers("t1", NOW, OLD), keys=(NEW,))
        assert isinstance(verdict, SignatureRefused) and verdict.code == "bad_signature"

    def test_other_task_id_is_refused(self) -> None:
        """A signature is bound to its task id."""
        verdict = check(headers("t1", NOW, NEW), task_id="t2")
        assert isinstance(verdict, SignatureRefused) and verdict.code == "bad_signature"

    @pytest.mark.parametrize("offset", [-300, 300, 0, -1, 299])
    def test_within_tolerance_is_accepted(self, offset: int) -> None:
        """Timestamps up to exactly the tolerance away, either way, are accepted."""
        assert isinstance(check(headers("t1", NOW + offset, NEW)), Signed)

    @pytest.mark.parametrize("offset", [-301, 301, -100_000])
    def test_past_tolerance_is_stale(self, offset: int) -> None:
        """One second past the tolerance, either way, is refused as stale."""
        verdict = check(headers("t1", NOW + offset, NEW))
        assert isinstance(verdict, SignatureRefused) and verdict.stale

    def test_no_keys_means_unsigned(self) -> None:
        """Without keys every request passes, unverified."""
        assert isinstance(check({}, keys=()), Unsigned)

    @pytest.mark.parametrize(
        ("h", "code"),
        [
            ({}, "missing_signature"),
            ({TIMESTAMP_HEADER: str(NOW)}, "missing_signature"),
            ({TIMESTAMP_HEADER: "soon", SIGNATURE_HEADER: "x"}, "invalid_timestamp"),
            ({TIMESTAMP_HEADER: "-5", SIGNATURE_HEADER: "x"}, "invalid_timestamp"),
            ({TIMESTAMP_HEADER: "١٢٣", SIGNATURE_HEADER: "x"}, "invalid_timestamp"),
            ({TIMESTAMP_HEADER: "9" * 40, SIGNATURE_HEADER: "x"}, "invalid_timestamp"),
            ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "not base64!"}, "bad_signature"),
            ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "é"}, "bad_signature"),
            ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "A" * 500}, "bad_signature"),
            ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: ""}, "bad_signature"),
        ],
    )
    def test_malformed_headers_are_refused(self, h: dict[str, str], code: str) -> None:
        """Missing or malformed headers are refused with a precise code, never an error."""
        verdict = check(h)
        assert isinstance(verdict, SignatureRefused) and verdict.code == code

    def test_signature_is_canonicalised(self) -> None:
        """Two spellings of one digest bind as one signature (no dodging the 409)."""
        good = sign(NEW, "t1", NOW)
        digest = base64.b64decode(good)
        # Flip the unused low bits of the last base64 character: same digest, new spelling.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = good.rstrip("=")[-1]
        respelled = good.rstrip("=")[:-1] + alphabet[alphabet.index(last) | 1] + "="
        if respelled == good:
            respelled = good.rstrip("=")[:-1] + alphabet[alphabet.index(last) & ~1] + "="
        assert respelled != good and base64.b64decode(respelled) == digest
        one = check({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: good})
        two = check({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: respelled})
        assert isinstance(one, Signed) and isinstance(two, Signed)
        assert one.signature == two.signature
