"""docs/benchmarks.md, where the benches record their figures: one section per heading, replaced in place."""

from __future__ import annotations

import os
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(title: str, section: str, path: Path = DOCS) -> None:
    """Replace the section whose heading line is `title` (up to the next `## `) with `section`, or append it.

    The file is read right before writing: other benches write other sections of it.
    """
    text = path.read_text()
    start = text.find(title + "\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = text.find("\n## ", start + len(title))
    rest = "" if end < 0 else text[end + 1:]
    path.write_text(text[:start] + section + ("\n" + rest if rest else ""))


def python_speed_s(additions: int = 10_000_000) -> float:
    """Seconds a plain Python loop of `additions` additions takes here: the machine's single-core speed for the
    interpreter, to set figures of different days (or machines) side by side. Best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(additions):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def machine_line() -> str:
    """Cores, the interpreter's speed and the load average, for a bench's header."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores; a 10 M-addition Python loop takes {python_speed_s():.2f} s (best of 3); "
            f"load average before the run {load}")
