"""docs/benchmarks.md, where the benches record their figures: one section per heading, replaced in place."""

from __future__ import annotations

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
