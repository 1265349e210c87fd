"""Audio previews: FluidSynth's Ogg Vorbis of a task's MIDI file, stored beside it; off
with the reason logged where FluidSynth is missing; a failed preview never holds a record."""

from __future__ import annotations

import io
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile
import structlog
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.common.errors import ConfigError, ProgramError
from services.common.events import sha256_hex
from services.common.kafka import Publisher
from services.common.keys import task_key
from services.common.settings import ProcessorSettings, Settings
from services.processor.app import create_app, preview_key
from services.processor.preview import SAMPLE_RATE, preview_config, render_preview

from ..helpers import committed_offsets, eventually
from .conftest import callback_event
from .test_real_programs import FLUIDSYNTH_MISSING, SONGS, needs_fluidsynth, note_times, rendered
from .test_service import metric, notes_events, publish_callback

SONG = SONGS[0][1]
MISSING = Path("/nonexistent/fluidsynth")


def decoded(audio: bytes) -> tuple[soundfile._SoundFileInfo, float]:
    """The file's format as libsndfile reads it, and its duration from the decoded samples."""
    info = soundfile.info(io.BytesIO(audio))
    samples, rate = soundfile.read(io.BytesIO(audio))
    return info, len(samples) / rate


@needs_fluidsynth
class TestRender:
    def test_ogg_vorbis_as_long_as_the_notes(self) -> None:
        """The preview decodes as Ogg Vorbis at 44.1 kHz; its stated and decoded durations
        agree and span the notes (plus FluidSynth's release tail)."""
        config, _ = preview_config(ProcessorSettings(previews="on"))
        assert config is not None
        preview = render_preview(rendered(SONG), config)
        info, seconds = decoded(preview.audio)
        assert (info.format, info.subtype, info.samplerate) == ("OGG", "VORBIS", SAMPLE_RATE)
        assert abs(seconds - preview.duration_seconds) <= 1 / SAMPLE_RATE
        _, _, last_end = note_times(SONG)
        assert last_end <= preview.duration_seconds <= last_end + 10.0

    def test_same_file_same_bytes(self) -> None:
        """Rendered twice, the same MIDI file gives the same preview bytes."""
        config, _ = preview_config(ProcessorSettings(previews="on"))
        assert config is not None
        midi = rendered(SONG)
        assert render_preview(midi, config).audio == render_preview(midi, config).audio

    def test_a_failing_program_is_one_line(self, tmp_path: Path) -> None:
        """A FluidSynth that fails gives a one-line ProgramError naming it."""
        config, _ = preview_config(ProcessorSettings(previews="on"))
        assert config is not None
        with pytest.raises(ProgramError, match=r"^fluidsynth exited with status \d+: .*MIDI"):
            render_preview(b"not a MIDI file", config)


class TestConfig:
    def test_auto_without_fluidsynth_is_off_with_the_reason_logged(self) -> None:
        """auto with a missing FluidSynth starts without previews, saying why in one line."""
        base = Settings.from_env({})
        settings = base.with_overrides(processor={"previews": "auto", "fluidsynth": str(MISSING)})
        with structlog.testing.capture_logs() as logs:
            create_app(settings, registry=CollectorRegistry())
        (line,) = [entry for entry in logs if entry["event"] == "previews"]
        assert line["enabled"] is False
        assert line["reason"] == f"{MISSING}: not an executable file"

    def test_auto_with_a_missing_soundfont_is_off(self, tmp_path: Path) -> None:
        """A SoundFont path that is missing or not a SoundFont turns auto previews off."""
        not_a_bank = tmp_path / "bank.sf2"
        not_a_bank.write_bytes(b"RIFF\0\0\0\0WAVE")
        for path, why in ((tmp_path / "none.sf2", "No such file"), (not_a_bank, "not a Sound")):
            config, reason = preview_config(ProcessorSettings(soundfont=path))
            assert config is None and why in reason

    def test_on_without_fluidsynth_refuses_to_start(self) -> None:
        """on with a missing FluidSynth is a configuration error naming the fix."""
        settings = Settings.from_env({}).with_overrides(
            processor={"previews": "on", "fluidsynth": str(MISSING)}
        )
        with pytest.raises(ConfigError, match=r"PROCESSOR_PREVIEWS=on but .*PROCESSOR_FLUIDSYNTH"):
            create_app(settings, registry=CollectorRegistry())

    def test_off_is_off(self) -> None:
        """off needs nothing installed."""
        config, reason = preview_config(ProcessorSettings(previews="off", fluidsynth=str(MISSING)))
        assert config is None and reason == "PROCESSOR_PREVIEWS=off"


def with_previews(settings: Settings, **processor: object) -> Settings:
    return settings.with_overrides(processor={"previews": "on", **processor})


async def run_processor(settings: Settings, registry: CollectorRegistry) -> TestServer:
    server = TestServer(create_app(settings, registry=registry), host="127.0.0.1")
    await server.start_server()
    return server


async def committed(settings: Settings, count: int) -> bool:
    offsets = await committed_offsets(
        settings, settings.processor.group_id, settings.kafka.topics.callbacks
    )
    return sum(offsets.values()) == count


@pytest.mark.kafka
@pytest.mark.skipif(FLUIDSYNTH_MISSING is not None, reason=str(FLUIDSYNTH_MISSING))
class TestProcessor:
    async def test_preview_beside_the_midi_file(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """The processor stores the preview at previews/<task key>.ogg and the notes event
        points at it; the same record again writes the same bytes and the same field."""
        settings, registry = with_previews(settings), CollectorRegistry()
        server = await run_processor(settings, registry)
        try:
            await publish_callback(publisher, settings, SONG, "song/1")
            await publish_callback(publisher, settings, SONG, "song/1")
            ((_, event), (_, again)) = await notes_events(settings, 2)
        finally:
            await server.close()
        data = settings.storage.data_dir
        midi = (data / "midi" / f"{task_key('song/1')}.mid").read_bytes()
        audio = (data / preview_key("song/1")).read_bytes()
        assert preview_key("song/1") == "previews/song%2F1.ogg"
        assert event["state"] == "complete"
        config, _ = preview_config(settings.processor)
        assert config is not None
        rendered = render_preview(midi, config)
        assert audio == rendered.audio
        assert event["preview"] == {
            "uri": (data / preview_key("song/1")).resolve().as_uri(),
            "sha256": sha256_hex(audio),
            "size_bytes": len(audio),
            "media_type": "audio/ogg",
            "duration_seconds": rendered.duration_seconds,
        }
        assert again["preview"] == event["preview"]
        assert metric(registry, "processor_previews_total", outcome="written") == 2

    async def test_an_older_repeat_points_at_the_newer_ones_preview(
        self, settings: Settings, publisher: Publisher
    ) -> None:
        """The same body again, received earlier (a repeat the dedupe missed, processed
        late): it replaces nothing, finds the same bytes and names them in its event."""
        settings, registry = with_previews(settings), CollectorRegistry()
        newer = callback_event(SONG, "song-3")
        older = replace(newer, received_at=newer.received_at - timedelta(minutes=1))
        server = await run_processor(settings, registry)
        try:
            for event in (newer, older):
                await publisher.publish(
                    settings.kafka.topics.callbacks, key=b"song-3", value=event.encode()
                )
            ((_, first), (_, second)) = await notes_events(settings, 2)
        finally:
            await server.close()
        assert first["preview"] is not None and second["preview"] == first["preview"]
        assert metric(registry, "processor_previews_total", outcome="written") == 1
        assert metric(registry, "processor_previews_total", outcome="kept") == 1

    @pytest.mark.parametrize("program", ["failing", "hanging"])
    async def test_a_failed_preview_still_completes_the_record(
        self, settings: Settings, publisher: Publisher, tmp_path: Path, program: str
    ) -> None:
        """A FluidSynth that fails, or hangs past the timeout (and is killed), costs the
        preview only: the MIDI file, the notes event and the commit still happen."""
        script = tmp_path / "fluidsynth"
        script.write_text(
            "#!/bin/sh\n" + ("exit 3\n" if program == "failing" else "exec sleep 60\n")
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        settings = with_previews(settings, fluidsynth=str(script), preview_timeout_seconds=1.0)
        registry = CollectorRegistry()
        with structlog.testing.capture_logs() as logs:
            server = await run_processor(settings, registry)
            try:
                await publish_callback(publisher, settings, SONG, "song-2")
                ((_, event),) = await notes_events(settings, 1)
                await eventually(lambda: committed(settings, 1), what="the commit")
            finally:
                await server.close()
        assert event["state"] == "complete" and event["midi"] is not None
        assert (settings.storage.data_dir / "midi" / "song-2.mid").exists()
        assert not (settings.storage.data_dir / preview_key("song-2")).exists()
        assert metric(registry, "processor_previews_total", outcome="failed") == 1
        (failed,) = [entry for entry in logs if entry["event"] == "preview_failed"]
        expected = "exited with status 3" if program == "failing" else "did not finish within 1 s"
        assert expected in failed["error"]
