"""The chaos soak: the CI chaos run's code with 10,000 tasks over 10 minutes of faults.

    make bench-chaos                                  # a new seed
    .venv/bin/python -m bench.chaos.soak --seed 11    # the faults of a run that printed 11

Prints the fault schedule as it happens, then the ledger (lost and mismatched must be 0)
and the throughput the system held while its parts were killed in turn. Exit 1 if the
ledger is not clean, naming the seed and the folder with every process's log.
"""

from __future__ import annotations

import argparse

from devenv.chaos.__main__ import main as chaos_main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.soak", description=__doc__)
    parser.add_argument("--seed", type=int, help="the seed of the faults (default: a new one)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    args = parser.parse_args()
    chaos_main(
        [
            "--soak",
            *(["--seed", str(args.seed)] if args.seed is not None else []),
            *(["--keep"] if args.keep else []),
        ]
    )


if __name__ == "__main__":
    main()
