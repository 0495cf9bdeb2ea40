"""Plots in asset metadata: the image itself, embedded, next to the file it was saved to."""

import base64
import re

import matplotlib.pyplot as plt

from dagster_project.plots import save_plot


def test_a_plot_is_embedded_as_a_png_and_saved_to_its_own_file(tmp_path):
    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, 1])
    metadata = save_plot(figure, tmp_path / "reports" / "m_v3_qini.png", "qini")
    assert set(metadata) == {"qini", "qini_file"}
    markdown = metadata["qini"].value
    match = re.fullmatch(r"!\[qini\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:80]
    assert base64.b64decode(match.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata["qini_file"].value == str(tmp_path / "reports" / "m_v3_qini.png")
    assert (tmp_path / "reports" / "m_v3_qini.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(figure.number)  # closed: runs do not accumulate open figures
