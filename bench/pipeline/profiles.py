"""py-spy's collapsed stacks (``--format raw``) summed up as text: where a service's busy
samples went, by the function on top of the stack and by our own functions below it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["Profile", "profile_summary"]

#: ``function (path/to/file.py:123)``: the line number is dropped, so a function is one row.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


class Profile:
    """Sample counts of one process: by leaf function, and inclusive by our functions."""

    def __init__(self, lines: Iterable[str], own: str = "services/") -> None:
        self.total = 0
        self.leaf: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            frames = [_name(frame) for frame in stack.split(";")]
            self.total += samples
            self.leaf[frames[-1]] += samples
            for frame in set(frames):
                if own in frame:
                    self.inclusive[frame] += samples

    def top(self, counter: Counter[str], count: int) -> list[tuple[str, float]]:
        return [(name, samples / self.total) for name, samples in counter.most_common(count)]


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    # site-packages/aiokafka/x.py -> aiokafka/x.py; services/... stays as it is.
    short = path.split("site-packages/")[-1].split("/lib/python3")[-1]
    return f"{match['function']} ({short})"


def profile_summary(name: str, lines: Iterable[str], seconds: float, rate: float = 50) -> str:
    """A few lines: busy samples against the wall clock, the top leaf functions, the top
    functions of our own code (inclusive)."""
    profile = Profile(lines)
    if not profile.total:
        return f"{name}: no samples"
    busy = profile.total / (seconds * rate)
    rows = [f"{name}: {profile.total} busy samples ({busy:.0%} of the wall clock, all threads)"]
    rows.append("  on top of the stack (self):")
    rows += [f"    {share:5.1%}  {fn}" for fn, share in profile.top(profile.leaf, 8)]
    rows.append("  our code, inclusive:")
    rows += [f"    {share:5.1%}  {fn}" for fn, share in profile.top(profile.inclusive, 10)]
    return "\n".join(rows)
