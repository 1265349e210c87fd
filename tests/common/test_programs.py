"""External programs run one way: missing, failing and hanging ones end in one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ProgramError
from services.common.programs import find_program, run_program

from ..helpers import eventually


class TestRunProgram:
    def test_output_is_captured(self) -> None:
        """A program that succeeds gives its output back."""
        assert run_program(["sh", "-c", "echo hello"], timeout=30).stdout == b"hello\n"

    def test_missing_program(self, tmp_path: Path) -> None:
        """A name not on PATH and a path that is not an executable are told apart."""
        with pytest.raises(ProgramError, match=r"^no-such-program-x: not found on PATH$"):
            find_program("no-such-program-x")
        with pytest.raises(ProgramError, match=r": not an executable file$"):
            run_program([tmp_path / "fluidsynth"], timeout=30)

    def test_failure_is_one_line_with_the_program_s_last_words(self) -> None:
        """A non-zero exit names the program, the status and its stderr on one line."""
        script = "echo first >&2; echo 'bad input' >&2; exit 3"
        with pytest.raises(ProgramError) as caught:
            run_program(["sh", "-c", script], timeout=30)
        assert str(caught.value) == "sh exited with status 3: first | bad input"

    def test_long_stderr_keeps_its_end(self) -> None:
        """A chatty program's message is cut from the front: its error is usually last."""
        script = "for i in $(seq 500); do echo noise $i >&2; done; echo 'the error' >&2; exit 1"
        with pytest.raises(ProgramError) as caught:
            run_program(["sh", "-c", script], timeout=30)
        message = str(caught.value)
        assert "\n" not in message and len(message) < 400 and message.endswith("the error")

    async def test_a_hanging_program_is_killed_with_its_children(self, tmp_path: Path) -> None:
        """Past the timeout the program and what it started are killed; the error says so."""
        pid_file = tmp_path / "child.pid"
        script = f"sleep 300 & echo $! > {pid_file}; wait"
        with pytest.raises(ProgramError, match=r"^sh did not finish within 0.5 s \(killed\)$"):
            run_program(["sh", "-c", script], timeout=0.5)
        child = int(pid_file.read_text())
        await eventually(lambda: not running(child), what=f"process {child} to end")


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting for its parent to reap it is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
