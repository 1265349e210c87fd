"""Callbacks of every kind that reaches the one callback URL, generated for the tests.

Users point several Suno operations at one URL, signed with one account-wide key. These
bodies are the project's own, shaped as each operation reports (the markers are what
matters: ``data.callbackType`` and tracks in ``data.data`` for music generation,
``data.vocal_removal_info`` for separation); none is copied from anywhere.
"""

from __future__ import annotations

import json
from typing import Any

from services.common.callback import CallbackKind

__all__ = ["OTHER_KINDS", "body", "music_generation", "separation", "unknown"]


def music_generation(task_id: str, stage: str = "complete") -> dict[str, Any]:
    """One stage (``text``, ``first``, ``complete``, ``error``) of a music-generation task."""
    if stage == "error":
        return {
            "code": 501,
            "msg": "generation did not finish",
            "data": {"callbackType": "error", "task_id": task_id, "data": None},
        }
    tracks = [
        {
            "id": f"{task_id}-track-{n}",
            "audio_url": "" if stage == "text" else f"https://audio.invalid/{task_id}/{n}.mp3",
            "prompt": "[Verse]\nla la la",
            "title": "Generated for a test",
            "tags": "test, synthetic",
            "duration": None if stage == "text" else 91.4 + n,
        }
        for n in range(2)
    ]
    return {
        "code": 200,
        "msg": f"{stage} stage reached",
        "data": {"callbackType": stage, "task_id": task_id, "data": tracks},
    }


def separation(task_id: str) -> dict[str, Any]:
    """A finished vocal/stem separation."""
    stems = ("vocal", "instrumental", "drums", "bass")
    return {
        "code": 200,
        "msg": "separation finished",
        "data": {
            "task_id": task_id,
            "vocal_removal_info": {
                f"{stem}_url": f"https://audio.invalid/{task_id}/{stem}.mp3" for stem in stems
            },
        },
    }


def unknown(task_id: str) -> dict[str, Any]:
    """A success no operation's markers identify: nothing says it holds notes."""
    return {"code": 200, "msg": "success", "data": {"taskId": task_id, "result": [1, 2]}}


#: Every kind that is not MIDI, one example each (by kind, then a name for the example).
OTHER_KINDS: dict[str, tuple[CallbackKind, Any]] = {
    "music-generation-text": ("music_generation", lambda t: music_generation(t, "text")),
    "music-generation-first": ("music_generation", lambda t: music_generation(t, "first")),
    "music-generation-complete": ("music_generation", lambda t: music_generation(t, "complete")),
    "music-generation-error": ("music_generation", lambda t: music_generation(t, "error")),
    "separation": ("separation", separation),
    "unknown": ("unknown", unknown),
}


def body(payload: dict[str, Any]) -> bytes:
    """Formatted the way a sender might (indented, not canonical), so byte-exactness shows."""
    return json.dumps(payload, indent=2).encode() + b"\n"
