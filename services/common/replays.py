"""The Kafka headers a replayed callback record carries, so that whoever reads it (the
tracker, for the console's timeline) knows which replay it belongs to, who started it and
from where, without any field in the callback schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["REPLAY_HEADER", "ReplayMark", "ReplayVia"]

#: Every replayed record has it (consumers and logs tell a replay from a live delivery).
REPLAY_HEADER: Final = ("replay", b"1")
_ID, _BY, _VIA = "replay.id", "replay.by", "replay.via"

#: Who published the replay: the console (for an operator) or ``suno-archiver replay``.
ReplayVia = Literal["console", "cli"]


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """One replay: the records it publishes (one per archived body) share its id."""

    via: ReplayVia | None = None
    #: The operator, when the publisher knows one (the console does, the CLI does not).
    by: str | None = None
    replay_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def headers(self) -> list[tuple[str, bytes]]:
        """:data:`REPLAY_HEADER` and this replay's own headers."""
        marks = [REPLAY_HEADER, (_ID, self.replay_id.encode())]
        if self.via is not None:
            marks.append((_VIA, self.via.encode()))
        if self.by is not None:
            marks.append((_BY, self.by.encode()))
        return marks

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]], fallback_id: str) -> ReplayMark:
        """The mark a record's headers carry; ``fallback_id`` names a replay published
        without an id (before replays had one), a replay of its own."""
        found = {name: value.decode("utf-8", "replace") for name, value in headers}
        named = found.get(_VIA)
        via: ReplayVia | None = (
            "console" if named == "console" else "cli" if named == "cli" else None
        )
        return cls(
            via=via,
            by=found.get(_BY) or None,
            replay_id=found.get(_ID) or fallback_id,
        )
