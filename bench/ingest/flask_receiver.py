"""The second baseline: the receiver the provider's documentation page shows, run as it shows.

A Flask app on Werkzeug's development server (``app.run``, threaded by default) that parses
the callback, prints a summary of it and writes it to ``midi_<taskId>.json`` with
``indent=2``, then answers 200. It verifies nothing and deduplicates nothing, and a 200
means only that a file was written. This is what a user of the provider starts from, so
the ingest's value is stated against it too.

    python bench/ingest/flask_receiver.py PORT OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue


def create_app(output_dir: Path) -> Flask:
    app = Flask(__name__)

    @app.route("/suno-midi-callback", methods=["POST"])
    def suno_midi_callback() -> ResponseReturnValue:
        callback_data = request.json
        code = callback_data.get("code")
        msg = callback_data.get("msg")
        task_id = callback_data.get("taskId")
        data = callback_data.get("data", {})
        print(f"Received MIDI callback: task {task_id}, code {code}, message {msg}")
        if code == 200:
            print("MIDI generation complete")
            instruments = data.get("instruments") or []
            if instruments:
                print(f"Instruments: {len(instruments)}")
                for instrument in instruments:
                    notes = instrument.get("notes", [])
                    print(f"  {instrument.get('name')}: {len(notes)} notes")
                    for note in notes[:3]:
                        print(
                            f"    pitch {note.get('pitch')}, start {note.get('start')}, "
                            f"end {note.get('end')}, velocity {note.get('velocity')}"
                        )
            with (output_dir / f"midi_{task_id}.json").open("w") as f:
                json.dump(callback_data, f, indent=2)
            print(f"Saved MIDI data for task {task_id}")
        else:
            print(f"MIDI generation failed: {msg}")
        return jsonify({"status": "received"}), 200

    return app


def main() -> None:
    port, output_dir = int(sys.argv[1]), Path(sys.argv[2])
    output_dir.mkdir(parents=True, exist_ok=True)
    create_app(output_dir).run(host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
