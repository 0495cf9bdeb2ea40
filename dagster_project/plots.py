"""Plots in Dagster's asset metadata: embedded in markdown (the UI shows the image itself, not a file path), next to
the file they were saved to (named per version or day, so an older run's metadata keeps pointing at its own plot)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

EMBED_DPI = 72  # the embedded copy: small enough for the event log (~20–60 kB of base64 per plot)


def save_plot(figure: Figure, path: Path, title: str, dpi: int = 110) -> dict[str, dg.MetadataValue]:
    """Save `figure` to `path` and close it; metadata: the plot embedded in markdown, and the file's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=EMBED_DPI)
    plt.close(figure)  # saved and embedded; keep none open across runs
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {
        title: dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})"),
        f"{title}_file": dg.MetadataValue.path(str(path)),
    }
