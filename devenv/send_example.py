"""Send a callback shaped like the provider's to a running ingest, signed when a key is set.

    python -m devenv.send_example                       # a generated callback, new task id
    python -m devenv.send_example --file callback.json  # any JSON file, byte for byte
    python -m devenv.send_example --shape data          # task id inside data (older shape)
    python -m devenv.send_example --example failure-data-null  # one of examples/callbacks/

It signs with the first key of ``SUNO_WEBHOOK_SECRETS`` (else the key ``make run``
generated under ``DATA_DIR``) the way the provider does:
``base64(HMAC-SHA256(key, taskId + "." + timestamp))``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from services.common.callback import callback_code, callback_kind, find_task_id
from services.common.keys import task_key
from services.common.main import load_settings
from services.common.settings import Settings

from .local_key import read_local_key

__all__ = [
    "EXAMPLES",
    "example_callback",
    "main",
    "provider_examples",
    "signature_headers",
    "signing_key",
]

#: The provider's documented callback bodies, kept in the repository (see its README).
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "callbacks"

#: A bar of drums and a bass line on the provider's 1/192 s grid.
_DRUMS = [(36, 0, 24), (42, 48, 60), (38, 96, 120), (42, 144, 156)]
_BASS = [(40, 0, 90), (43, 96, 186), (45, 192, 282), (47, 288, 378)]


def example_callback(task_id: str, *, shape: str = "top") -> dict[str, Any]:
    """A success callback in the provider's documented shape, with generated notes.

    Times mix numbers and numeric strings, as the provider's own examples do.
    """

    def notes(spec: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
        return [
            {"pitch": pitch, "start": start / 192, "end": str(end / 192), "velocity": 0.8}
            for pitch, start, end in spec
        ]

    data: dict[str, Any] = {
        "state": "complete",
        "instruments": [
            {"name": "Drums", "notes": notes(_DRUMS)},
            {"name": "Electric Bass (finger)", "notes": notes(_BASS)},
        ],
    }
    if shape == "data":
        return {"code": 200, "msg": "success", "data": {"taskId": task_id, **data}}
    return {"task_id": task_id, "code": 200, "msg": "success", "data": data}


def provider_examples() -> dict[str, Path]:
    """The provider's example callbacks by name (the file name without ``.json``)."""
    return {path.stem: path for path in sorted(EXAMPLES.glob("*.json"))}


def signature_headers(key: str, task_id: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(key.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()
    return {"X-Webhook-Timestamp": ts, "X-Webhook-Signature": base64.b64encode(digest).decode()}


def signing_key(settings: Settings) -> str | None:
    """The first key of SUNO_WEBHOOK_SECRETS, else the one ``make run`` generated."""
    for secret in settings.ingest.webhook_secrets:
        if secret.get().strip():
            return secret.get().strip()
    return read_local_key(settings.storage.data_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.send_example",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settings = load_settings("send_example")
    parser.add_argument(
        "--url", default=f"http://127.0.0.1:{settings.ingest.port}/callbacks/suno/midi"
    )
    examples = provider_examples()
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="send this JSON file byte for byte")
    source.add_argument(
        "--example",
        choices=sorted(examples),
        help=f"send one of the provider's documented callbacks from {EXAMPLES.parent.name}/"
        f"{EXAMPLES.name}/, byte for byte",
    )
    parser.add_argument("--shape", choices=("top", "data"), default="top")
    parser.add_argument("--task-id", help="task id of the generated callback (default: new)")
    args = parser.parse_args(argv)

    if args.example:
        args.file = examples[args.example]
    if args.file:
        try:
            body = args.file.read_bytes()
        except OSError as exc:
            sys.exit(f"cannot read {args.file}: {exc.strerror}")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            sys.exit(f"{args.file} is not JSON: {exc}")
    else:
        payload = example_callback(
            args.task_id or f"example-{uuid.uuid4().hex[:12]}", shape=args.shape
        )
        body = json.dumps(payload, indent=2).encode()
    task_id = find_task_id(payload) or ""
    headers = {"Content-Type": "application/json"}
    key = signing_key(settings)
    if key is not None:
        headers.update(signature_headers(key, task_id))
    request = urllib.request.Request(args.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            answer = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        answer, status = exc.read().decode(), exc.code
    except urllib.error.URLError as exc:
        sys.exit(f"could not reach the ingest at {args.url}: {exc.reason} (is `make run` running?)")
    print(f"task {task_id}: HTTP {status} {answer}")
    if status != 200:
        sys.exit(1)
    kind = callback_kind(payload) if isinstance(payload, dict) else "unknown"
    if kind != "midi":
        print(f"not a MIDI callback (kind {kind}): no MIDI file; its raw body is archived")
    elif callback_code(payload) == 200:
        midi = settings.storage.data_dir / "midi" / f"{task_key(task_id)}.mid"
        print(f"MIDI file (in a few seconds): {midi}")
    else:
        print("a failure callback: no MIDI file; its raw body is archived")


if __name__ == "__main__":
    main()
