"""``python -m devenv.chaos``: one chaos run, its ledger printed; exit 1 (naming the seed
that reproduces its faults) unless nothing was lost, mismatched or out of place.

    python -m devenv.chaos                      # the CI sizing, a new seed
    python -m devenv.chaos --seed 7             # the same faults as a run that printed seed 7
    python -m devenv.chaos --tasks 10000 --seconds 600    # the soak (make bench-chaos)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ..kafka import BrokerStartError
from ..postgres import PostgresStartError
from ..redis import RedisStartError
from .run import CI, SOAK, run

PROGRAM = "python -m devenv.chaos"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, help="the seed of the faults (default: a new one)")
    parser.add_argument("--soak", action="store_true", help="10,000 tasks over 10 minutes")
    parser.add_argument("--tasks", type=int, help="how many tasks to request")
    parser.add_argument("--seconds", type=float, help="how long the load and the faults last")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, data)")
    args = parser.parse_args(argv)
    sizing = SOAK if args.soak else CI
    if args.tasks is not None:
        sizing = replace(sizing, tasks=args.tasks)
    if args.seconds is not None:
        sizing = replace(sizing, load_seconds=args.seconds)
    if sizing.tasks < 1 or sizing.load_seconds < 20:
        sys.exit(f"{PROGRAM}: --tasks must be at least 1 and --seconds at least 20")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    run_dir = Path(tempfile.mkdtemp(prefix="suno-chaos-"))
    try:
        ledger = asyncio.run(run(seed, sizing, run_dir))
    except KeyboardInterrupt:
        sys.exit(f"{PROGRAM}: interrupted (seed {seed}; logs in {run_dir})")
    except (BrokerStartError, PostgresStartError, RedisStartError, RuntimeError) as exc:
        sys.exit(f"{PROGRAM}: cannot run: {exc} (logs in {run_dir})")
    print(ledger.table(), flush=True)
    if not ledger.ok:
        sys.exit(f"{PROGRAM}: FAILED: reproduce with --seed {seed} (logs in {run_dir})")
    print(f"no result lost (seed {seed})")
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
