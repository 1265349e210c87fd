"""The quantized variant and the audio preview in the console: served byte for byte where
the processor made them, 404 with a reason where not, and the task page shows a control
only for what exists (the preview plays in Debian's headless Chromium)."""

from __future__ import annotations

import json

import pytest
import requests

from devenv.programs import fluidsynth_missing
from devenv.songs import SongSpec, make_song
from services.common.settings import ProcessorSettings
from services.processor.app import Processed, preview_key, process_callback, quantized_key
from services.processor.preview import preview_config, render_preview
from tests.fixtures.browser import Browser

from .browser import assert_clean_log, open_task_page
from .conftest import Console, CreatedTask, unique

pytestmark = pytest.mark.postgres

TASKS = "/api/v1/tasks"
FLUIDSYNTH_MISSING = fluidsynth_missing()


def song_task(console: Console, *, quantized: bool, preview: bool) -> tuple[CreatedTask, bytes]:
    """A completed band song; its quantized file and preview stored where the processor
    puts them when it is set to make them. Returns the task and the preview's bytes."""
    task_id = unique("files")
    song = make_song(SongSpec(bpm=104.0, seconds=12.0, seed=3))
    body = json.dumps({**song.payload, "data": {**song.payload["data"], "taskId": task_id}})
    created = console.completed_task(body=body.encode(), task_id=task_id)
    audio = b""
    if quantized:
        processed = process_callback(created.body, grid="1/16")
        assert isinstance(processed, Processed) and processed.quantized is not None
        console.run(console.storage.put(quantized_key(task_id), processed.quantized))
    if preview:
        config, reason = preview_config(ProcessorSettings(previews="on"))
        assert config is not None, reason
        assert created.midi is not None
        audio = render_preview(created.midi, config).audio
        console.run(console.storage.put(preview_key(task_id), audio))
    return created, audio


class TestApi:
    def test_files_say_what_exists(self, console: Console) -> None:
        created, _ = song_task(console, quantized=False, preview=False)
        shown = requests.get(f"{console.url}{TASKS}/{created.task_id}", timeout=30).json()
        assert shown["files"] == {"midi": True, "quantized": False, "preview": False}
        for suffix, code in (("quantized", "no_quantized"), ("preview", "no_preview")):
            response = requests.get(f"{console.url}{TASKS}/{created.task_id}/{suffix}", timeout=30)
            assert response.status_code == 404 and response.json()["error"]["code"] == code

    def test_quantized_file_byte_for_byte(self, console: Console) -> None:
        created, _ = song_task(console, quantized=True, preview=False)
        response = requests.get(f"{console.url}{TASKS}/{created.task_id}/quantized", timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "audio/midi"
        assert response.headers["Content-Disposition"] == (
            f'attachment; filename="{created.task_id}.quantized.mid"'
        )
        expected = process_callback(created.body, grid="1/16")
        assert isinstance(expected, Processed) and response.content == expected.quantized
        shown = requests.get(f"{console.url}{TASKS}/{created.task_id}", timeout=30).json()
        assert shown["files"]["quantized"] is True


@pytest.mark.skipif(FLUIDSYNTH_MISSING is not None, reason=str(FLUIDSYNTH_MISSING))
class TestPreview:
    def test_served_inline_as_ogg(self, console: Console) -> None:
        created, audio = song_task(console, quantized=False, preview=True)
        response = requests.get(f"{console.url}{TASKS}/{created.task_id}/preview", timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "audio/ogg"
        assert "Content-Disposition" not in response.headers
        assert response.content == audio and audio.startswith(b"OggS")

    def test_the_page_plays_it(self, browser: Browser, console: Console) -> None:
        """The player appears only with a preview, and Chromium decodes it: a duration."""
        created, _ = song_task(console, quantized=True, preview=True)
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        assert browser.find("#download-quantized").is_displayed()
        assert browser.find("#preview-row").is_displayed()
        browser.wait_until(
            lambda: (
                float(
                    browser.driver.execute_script(
                        "return document.getElementById('preview').duration || 0"
                    )
                )
                > 10
            ),
            "the preview's duration to be known",
        )
        browser.screenshot("task-preview")
        assert_clean_log(browser)

    def test_no_controls_without_them(self, browser: Browser, console: Console) -> None:
        created, _ = song_task(console, quantized=False, preview=False)
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        assert not browser.find("#download-quantized").is_displayed()
        assert not browser.find("#preview-row").is_displayed()
        assert_clean_log(browser)
