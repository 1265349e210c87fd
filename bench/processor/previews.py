"""What an audio preview costs the processor: FluidSynth's time, its memory and the size
of the Ogg Vorbis, by song length and note count.

Renders each song three times through the processor's own path
(:func:`services.processor.preview.render_preview`, default settings: Debian's
default-GM.sf2) and prints the median time, the peak memory of the FluidSynth child and
the audio's size and bit rate.

Run: ``.venv/bin/python -m bench.processor.previews``
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

from devenv.console_seed import song_body
from services.common.settings import ProcessorSettings
from services.processor.app import Processed, process_callback
from services.processor.preview import preview_config, render_preview

ROUNDS = 3
#: (notes, seconds): a short clip, a typical song, a dense one.
SONGS = ((200, 30.0), (2_000, 240.0), (10_000, 240.0))


def main() -> None:
    config, reason = preview_config(ProcessorSettings())
    if config is None:
        sys.exit(f"previews are off here: {reason}")
    print(f"SoundFont {config.soundfont.resolve()}")
    print("| notes | audio s | render s (median) | FluidSynth peak MiB | Ogg KiB | kbit/s |")
    print("|---|---|---|---|---|---|")
    for notes, seconds in SONGS:
        processed = process_callback(song_body("bench", notes=notes, seconds=seconds))
        assert isinstance(processed, Processed) and processed.midi is not None
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            preview = render_preview(processed.midi, config)
            times.append(time.perf_counter() - started)
        # ru_maxrss of the children: the largest FluidSynth so far, in KiB on Linux.
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size = len(preview.audio)
        rate = size * 8 / preview.duration_seconds / 1000
        print(
            f"| {notes} | {preview.duration_seconds:.1f} | {statistics.median(times):.2f} "
            f"| {peak:.0f} | {size / 1024:.0f} | {rate:.0f} |"
        )


if __name__ == "__main__":
    main()
