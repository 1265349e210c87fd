"""``suno-archiver``: ``run`` the archiving consumer (more commands: see ``--help``)."""

from __future__ import annotations

import argparse

from services.common.main import serve

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="suno-archiver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume callback events and archive them until SIGTERM")
    args = parser.parse_args(argv)
    if args.command == "run":
        serve("suno-archiver", create_app, lambda s: (s.archiver.host, s.archiver.port))


if __name__ == "__main__":
    main()
