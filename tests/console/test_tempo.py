"""The ruler in bars: the notes document's tempo is the MIDI file's, bar for bar, and the
task page draws it in Debian's headless Chromium."""

from __future__ import annotations

import io
import json

import mido
import pytest
import requests

from tests.fixtures.browser import Browser

from .browser import assert_clean_log, open_task_page
from .conftest import Console, unique

pytestmark = pytest.mark.postgres


def steady_body(task_id: str, *, bpm: float = 100.0, beats: int = 64) -> bytes:
    """Piano on every beat and bass on each bar's first, from a first beat at 0.3 s."""
    period = 60 / bpm
    piano = [
        {"pitch": 60 + k % 7, "start": 0.3 + k * period, "end": 0.3 + (k + 0.5) * period}
        for k in range(beats)
    ]
    bass = [
        {"pitch": 36, "start": 0.3 + k * period, "end": 0.3 + (k + 2) * period, "velocity": 1}
        for k in range(0, beats, 4)
    ]
    instruments = [
        {"name": "Acoustic Grand Piano", "notes": piano},
        {"name": "Bass", "notes": bass},
    ]
    data = {"taskId": task_id, "state": "complete", "instruments": instruments}
    return json.dumps({"code": 200, "msg": "success", "data": data}).encode()


def file_bars(midi: bytes, until: float) -> list[tuple[float, int]]:
    """Bar starts (seconds, beats) by the file's conductor track as mido reads it: an
    independent reading of the tempo and time-signature events."""
    parsed = mido.MidiFile(file=io.BytesIO(midi))
    tempos, signatures, now = [], [], 0
    for message in parsed.tracks[0]:
        now += message.time
        if message.type == "set_tempo":
            tempos.append((now, message.tempo))
        elif message.type == "time_signature":
            signatures.append((now, message.numerator, message.denominator))

    def seconds(tick: int) -> float:
        total, previous, tempo = 0.0, 0, 500_000
        for at, value in tempos:
            if at > tick:
                break
            total += mido.tick2second(at - previous, parsed.ticks_per_beat, tempo)
            previous, tempo = at, value
        return total + mido.tick2second(tick - previous, parsed.ticks_per_beat, tempo)

    bars, tick = [], 0
    while seconds(tick) <= until:
        _, numerator, denominator = [s for s in signatures if s[0] <= tick][-1]
        bars.append((seconds(tick), numerator))
        tick += numerator * parsed.ticks_per_beat * 4 // denominator
    return bars


class TestNotesTempo:
    def test_bars_are_the_files_bars(self, console: Console) -> None:
        """Each bar the API gives starts where the served .mid file's bar starts (1 ms)."""
        created = console.completed_task(
            body=steady_body(task_id := unique("tempo")), task_id=task_id
        )
        doc = requests.get(f"{console.url}/api/v1/tasks/{task_id}/notes", timeout=30).json()
        tempo = doc["tempo"]
        assert tempo["estimated"] is True and tempo["reason"] == "estimated"
        midi = requests.get(f"{console.url}/api/v1/tasks/{task_id}/midi", timeout=30).content
        expected = file_bars(midi, doc["duration_seconds"])
        assert len(tempo["bars"]) == len(expected) > 10
        for (start, beats), (file_start, file_beats) in zip(tempo["bars"], expected, strict=True):
            assert abs(start - file_start) <= 0.001 and beats == file_beats
        assert created.task_id == task_id

    def test_no_estimate_no_bars(self, console: Console) -> None:
        """Two notes cannot tell a tempo: 120 BPM, the reason, and no bar lines."""
        created = console.completed_task()
        doc = requests.get(f"{console.url}/api/v1/tasks/{created.task_id}/notes", timeout=30).json()
        assert doc["tempo"]["estimated"] is False and doc["tempo"]["bars"] == []
        assert doc["tempo"]["bpm"] == 120.0 and doc["tempo"]["reason"]


class TestRuler:
    def test_the_page_draws_bars_over_the_roll(self, browser: Browser, console: Console) -> None:
        """An estimated tempo: the bar strip is drawn and the tempo is shown beside the roll."""
        task_id = unique("tempo-ui")
        console.completed_task(body=steady_body(task_id), task_id=task_id)
        doc = requests.get(f"{console.url}/api/v1/tasks/{task_id}/notes", timeout=30).json()
        open_task_page(browser, f"{console.url}/tasks/{task_id}")
        browser.wait_for_attribute("#roll", "data-bars", str(len(doc["tempo"]["bars"])))
        browser.wait_until(
            lambda: int(browser.find("#roll").get_attribute("data-bars-drawn") or 0) > 0,
            "the bar strip to be drawn",
        )
        shown = browser.find("#tempo")
        assert shown.get_attribute("data-estimated") == "true"
        assert shown.text.startswith(f"{doc['tempo']['bpm']:.1f} BPM")
        browser.screenshot("task-bars")
        assert_clean_log(browser)

    def test_no_bar_strip_without_an_estimate(self, browser: Browser, console: Console) -> None:
        created = console.completed_task()
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        browser.wait_for_attribute("#tempo", "data-estimated", "false")
        assert browser.find("#roll").get_attribute("data-bars") == "0"
        assert "not estimated" in browser.find("#tempo").text
        assert_clean_log(browser)
