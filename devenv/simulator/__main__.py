"""``suno-provider-sim``: run the simulated provider, its behaviour set by flags.

    suno-provider-sim --port 8090 --webhook-key-file data/local-webhook-key --seed 7
    suno-provider-sim --script src-1=success,drop --script src-2=failure --api-fault 429=0.2

Logging follows the services' ``LOG_LEVEL`` and ``LOG_FORMAT``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from services.common.logs import configure_logging
from services.common.main import load_settings

from .app import create_app
from .config import Faults, Script, SimConfig, SimConfigError, parse_callback_plan

__all__ = ["main", "parse_args"]

PROGRAM = "suno-provider-sim"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    add("--port", type=int, default=8090, help="listen port (default %(default)s)")
    add("--seed", type=int, default=0, help="seed of every draw: ids, notes, shapes, faults")
    add("--api-key", default="sim-api-key", help="the Bearer key clients must send")
    add("--any-api-key", action="store_true", help="accept any non-empty Bearer key")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--webhook-key", help="the account's webhook HMAC key (else unsigned)")
    key.add_argument("--webhook-key-file", type=Path, help="read the webhook key from a file")
    add("--completion-seconds", type=float, default=2.0, help="generation time of a task")
    add("--realistic", action="store_true", help="the provider's 30-90 s generation time")
    add(
        "--error-status",
        choices=("mirror", "ok"),
        default="mirror",
        help="HTTP status of errors: the body's code (mirror) or always 200 (ok)",
    )
    add("--rate-limit-requests", type=int, default=20, help="API requests per window")
    add("--rate-limit-window", type=float, default=10.0, help="the rate window in seconds")
    add("--callback-timeout", type=float, default=15.0, help="one callback attempt's timeout")
    add("--callback-attempts", type=int, default=3, help="attempts in a row before giving up")
    add("--callback-retry-seconds", type=float, default=1.0, help="pause between attempts")
    for name in ("drop", "duplicate", "delay", "failure", "empty", "slow"):
        add(f"--{name}-ratio", type=float, default=0.0, help=f"ratio of {name} faults/outcomes")
    add("--delay-seconds", type=float, default=30.0, help="how late a delayed callback is")
    add("--slow-seconds", type=float, default=5.0, help="how late a slow API answer is")
    add(
        "--api-fault",
        action="append",
        default=[],
        metavar="CODE=RATIO",
        help="answer this ratio of API requests with CODE (429, 430, 455, 500); repeatable",
    )
    add(
        "--script",
        action="append",
        default=[],
        metavar="SOURCE=OUTCOME[,CALLBACK[,SHAPE]]",
        help="fate of tasks from SOURCE, e.g. src-1=success,drop or src-2=failure; repeatable",
    )
    return parser


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise SimConfigError(f"{what} {text!r} is not NAME=VALUE")
    return name, value


def _script(text: str) -> tuple[str, Script]:
    source, spec = _pair(text, "--script")
    outcome, callback, shape, *rest = [*spec.split(","), "", ""]
    if any(rest):
        raise SimConfigError(f"--script {text!r} has more than OUTCOME,CALLBACK,SHAPE")
    plan = parse_callback_plan(callback or "deliver")
    return source, Script(outcome or "success", plan, shape or None)  # type: ignore[arg-type]


def parse_args(argv: Sequence[str] | None = None) -> tuple[SimConfig, str, int]:
    """The simulator's configuration and listen address from the command line."""
    args = _parser().parse_args(argv)
    webhook_key = args.webhook_key
    if args.webhook_key_file is not None:
        try:
            webhook_key = args.webhook_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SimConfigError(f"cannot read --webhook-key-file: {exc}") from exc
    api = {}
    for text in args.api_fault:
        code, ratio = _pair(text, "--api-fault")
        try:
            api[int(code)] = float(ratio)
        except ValueError as exc:
            raise SimConfigError(f"--api-fault {text!r} is not CODE=RATIO") from exc
    faults = Faults(
        drop=args.drop_ratio,
        duplicate=args.duplicate_ratio,
        delay=args.delay_ratio,
        delay_seconds=args.delay_seconds,
        failure=args.failure_ratio,
        empty=args.empty_ratio,
        api=api,
        slow=args.slow_ratio,
        slow_seconds=args.slow_seconds,
    )
    config = SimConfig(
        seed=args.seed,
        api_key=None if args.any_api_key else args.api_key,
        webhook_key=webhook_key.encode() if webhook_key else None,
        completion_seconds=args.completion_seconds,
        realistic=args.realistic,
        error_status=args.error_status,
        rate_limit_requests=args.rate_limit_requests,
        rate_limit_window_seconds=args.rate_limit_window,
        callback_timeout_seconds=args.callback_timeout,
        callback_attempts=args.callback_attempts,
        callback_retry_seconds=args.callback_retry_seconds,
        faults=faults,
        scripts=dict(_script(text) for text in args.script),
    )
    return config, args.host, args.port


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until SIGINT or SIGTERM; a bad flag or port is one line, exit 1."""
    settings = load_settings(PROGRAM)
    try:
        config, host, port = parse_args(argv)
    except SimConfigError as exc:
        sys.exit(f"{PROGRAM}: {exc}")
    configure_logging(settings.log)
    try:
        web.run_app(create_app(config), host=host, port=port, access_log=None, print=None)
    except OSError as exc:
        sys.exit(f"{PROGRAM}: cannot listen on {host}:{port}: {exc.strerror or exc}")


if __name__ == "__main__":
    main()
