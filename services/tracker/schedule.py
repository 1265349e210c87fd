"""When the tracker polls a task, and what a poll's answer or a pipeline event means for it.

Pure functions over plain values: the service wires them to the registry, the provider
client and Kafka, and the tests check every rule here without any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.common.callback import callback_code, callback_kind
from services.common.keys import REQUEST_ID_PARAM

__all__ = [
    "NotesOutcome",
    "PollAction",
    "callback_url",
    "first_poll_at",
    "next_poll_delay",
    "notes_outcome",
    "poll_action",
    "terminal_of_callback",
]

#: The provider's own advice for polling ("every 10-30 s"): the first polls stay in it.
FIRST_POLLS: Final = 3

#: What a poll led to: the task's terminal state, or ``None`` (still running: poll again).
PollTerminal = Literal["completed", "failed", "empty"]


def callback_url(base: str, request_id: str) -> str:
    """``base`` with our request id in its query string, so that the callback of a task
    whose submission outcome we never learned names its request (FACTS: the provider
    POSTs to the URL exactly as given)."""
    parts = urlsplit(base)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != REQUEST_ID_PARAM
    ]
    query.append((REQUEST_ID_PARAM, request_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def first_poll_at(submitted_at: datetime, poll_after_seconds: int) -> datetime:
    """A task is first polled when it has had time to end and its callback to arrive."""
    return submitted_at + timedelta(seconds=poll_after_seconds)


def next_poll_delay(polls_done: int, interval_seconds: int, max_interval_seconds: int) -> float:
    """Seconds until the next poll after ``polls_done`` polls of a task still running: the
    first :data:`FIRST_POLLS` at ``interval_seconds``, then doubling up to the maximum."""
    if polls_done < FIRST_POLLS:
        return float(interval_seconds)
    doubled = interval_seconds * 2 ** min(polls_done - FIRST_POLLS + 1, 32)
    return float(min(doubled, max_interval_seconds))


@dataclass(frozen=True, slots=True)
class PollAction:
    """What to do with one ``record-info`` answer."""

    #: Send the answer down the pipeline as a ``source=POLL`` callback event (its MIDI file,
    #: archive entry and notes event), before anything else.
    publish: bool
    #: The terminal state to record now; ``None``: wait (for the notes event, or the task).
    terminal: PollTerminal | None


def poll_action(outcome: str) -> PollAction:
    """``outcome`` is the answer's: ``pending``, ``completed``, ``empty`` or ``failed``.

    A finished task's answer always goes down the pipeline (the archive keeps every result
    the provider will delete after 14 days). A completed task becomes ``completed`` when the
    processor's notes event says its file exists; a failed or empty one is terminal at once.
    """
    if outcome == "pending":
        return PollAction(publish=False, terminal=None)
    if outcome == "completed":
        return PollAction(publish=True, terminal=None)
    if outcome in ("failed", "empty"):
        return PollAction(publish=True, terminal=outcome)  # type: ignore[arg-type]
    raise ValueError(f"unknown record-info outcome {outcome!r}")


def terminal_of_callback(payload: dict[str, Any]) -> Literal["failed"] | None:
    """A MIDI callback that says the task failed is terminal at once; a success waits for
    the processor's notes event (which says whether it held notes)."""
    if callback_kind(payload) != "midi":
        return None
    code = callback_code(payload)
    return "failed" if code is not None and code != 200 else None


NotesOutcome = Literal["completed", "empty", "failed"]


def notes_outcome(state: str, note_count: int) -> NotesOutcome | None:
    """The terminal state a notes event proves: ``complete`` with notes -> completed (its
    MIDI file is written), ``complete`` without -> empty, ``failed`` -> failed;
    ``unknown`` (no code) proves nothing."""
    if state == "complete":
        return "completed" if note_count > 0 else "empty"
    if state == "failed":
        return "failed"
    return None
