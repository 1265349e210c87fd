"""A clone of the repository is complete: no tracked file reaches outside it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from devenv.send_example import EXAMPLES, provider_examples
from services.common.callback import find_task_id

ROOT = Path(__file__).resolve().parents[2]

#: Text that points outside the checkout: the sibling folder the project was specified
#: from, and absolute paths of the machine it was written on.
OUTSIDE = re.compile(
    r"\.\./+shared\b"  # a relative path to a sibling folder
    r"|shared[/]reference"  # the reference material, however it is reached
    r"|\.parent\s*/\s*[\"']shared[\"']"  # the same built with pathlib
    r"|(?<![\w.])/wor[k]/"  # the development machine's absolute paths
)

#: Markdown links and images with a relative target: ``[text](target)``.
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)")


def tracked_files() -> list[Path]:
    """The files a clone gets: ``git ls-files``, or the tree when this is no checkout."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "data", "node_modules"}
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not skipped & set(path.relative_to(ROOT).parts[:1])
        ]
    return [ROOT / name for name in listing.decode().split("\0") if name]


def texts() -> list[tuple[Path, str]]:
    """Every tracked file that reads as UTF-8 text, with its text."""
    found = []
    for path in tracked_files():
        try:
            found.append((path, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, FileNotFoundError):
            continue
    return found


class TestSelfContained:
    def test_no_tracked_file_refers_outside_the_repository(self) -> None:
        """No tracked file names a path outside the checkout (a user's clone has none)."""
        offenders = [
            f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path, text in texts()
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
        assert not offenders, "move what these need into the repository:\n" + "\n".join(offenders)

    def test_relative_markdown_links_stay_inside_and_resolve(self) -> None:
        """Every relative link in a Markdown file points at a file of the repository."""
        broken = []
        for path, text in texts():
            if path.suffix != ".md":
                continue
            for target in LINK.findall(text):
                resolved = (path.parent / target).resolve()
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    broken.append(f"{path.relative_to(ROOT)}: {target}")
        assert not broken, "links that leave the repository or lead nowhere:\n" + "\n".join(broken)

    def test_the_pattern_catches_each_way_out(self) -> None:
        """The scan's pattern matches every form of reference it exists to forbid."""
        ways_out = [
            "make send-example ARGS=--file " + "../" + "shared/x.json",
            "see ../.." + "/shared/STYLE.md",
            "REF = ROOT.parent" + ' / "shared" / "reference"',
            "cat " + "/wo" + "rk/main/README.md",
        ]
        assert [bool(OUTSIDE.search(line)) for line in ways_out] == [True] * len(ways_out)
        assert not OUTSIDE.search("the shared consumer loop; services/common/")


class TestProviderExamples:
    def test_every_documented_shape_is_kept(self) -> None:
        """Both success shapes and both failure shapes are files of the repository."""
        examples = provider_examples()
        assert set(examples) == {
            "success-task-id-top-level",
            "success-task-id-in-data",
            "failure-data-null",
            "failure-task-id-in-data",
        }
        assert all(path.is_relative_to(ROOT) for path in examples.values())
        readme = (EXAMPLES / "README.md").read_text()
        for name in examples:
            assert f"`{name}.json`" in readme, f"examples/callbacks/README.md omits {name}"

    @pytest.mark.parametrize(
        ("name", "code"),
        [
            ("success-task-id-top-level", 200),
            ("success-task-id-in-data", 200),
            ("failure-data-null", 500),
            ("failure-task-id-in-data", 500),
        ],
    )
    def test_example_is_the_shape_it_is_named_for(self, name: str, code: int) -> None:
        """Each file carries the task id where its name says, and the code it stands for."""
        payload = json.loads(provider_examples()[name].read_bytes())
        assert payload["code"] == code
        assert find_task_id(payload) == "5c79****be8e"
        in_data = name.endswith("in-data")
        assert ("task_id" in payload) is not in_data
        if in_data:
            assert payload["data"]["taskId"] == "5c79****be8e"
        if name == "failure-data-null":
            assert payload["data"] is None
