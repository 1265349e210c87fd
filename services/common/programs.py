"""External programs (FluidSynth, MuseScore) run one way: found first, bounded in time,
their failures turned into one-line :class:`ProgramError` messages.

The processor's previews, the tests that open our files in real programs and the bench all
go through :func:`run_program`, so a missing binary, a hang or a crash reads the same
everywhere, and a child that outlives its timeout is killed, never left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ProgramError

__all__ = ["ProgramError", "find_program", "run_program"]

#: How much of a failing program's own message goes into ours.
_STDERR_TAIL = 300


def find_program(program: str) -> str:
    """The absolute path of ``program`` (a name on ``PATH`` or a path), or
    :class:`ProgramError` saying which one is missing."""
    found = shutil.which(program)
    if found is None:
        where = "not an executable file" if os.sep in program else "not found on PATH"
        raise ProgramError(f"{program}: {where}")
    return found


def run_program(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion within ``timeout`` seconds, its output captured.

    Raises :class:`ProgramError` when the program is missing, cannot start, exits non-zero
    (with the last lines of its stderr) or outlives ``timeout`` (it and its children are
    killed).
    """
    program = find_program(str(argv[0]))
    name = Path(program).name
    try:
        # A session of its own: on timeout the whole group goes, children included.
        process = subprocess.Popen(
            [program, *map(str, argv[1:])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
    except OSError as exc:
        raise ProgramError(f"{name} could not start: {exc}") from exc
    with process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise ProgramError(f"{name} did not finish within {timeout:g} s (killed)") from exc
    if process.returncode != 0:
        raise ProgramError(f"{name} exited with status {process.returncode}: {_last_words(stderr)}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _last_words(stderr: bytes) -> str:
    """The end of a program's stderr on one line (its error is usually last)."""
    text = " | ".join(line.strip() for line in stderr.decode(errors="replace").splitlines())
    text = text.strip(" |") or "(no message)"
    return text if len(text) <= _STDERR_TAIL else "..." + text[-_STDERR_TAIL:]
