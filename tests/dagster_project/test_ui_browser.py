"""The Dagster UI as a user sees it: the challenger's asset page, rendered by Chromium, shows its plot as an image
(not a file path) and its metrics as numbers."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import matplotlib.pyplot as plt
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from dagster_project.plots import save_plot
from infra.launch import ensure_dagster_home
from tests.browser import browser, free_port  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"


def test_the_challengers_page_shows_its_plot_as_an_image(browser, tmp_path):  # noqa: F811
    home = tmp_path / "dagster"
    ensure_dagster_home(home)
    instance = dg.DagsterInstance.from_config(str(home))
    figure, axes = plt.subplots()
    axes.plot([0, 0.5, 1], [0, 0.3, 0.4], label="policy")
    axes.legend()
    metadata = {"version": "7", "metric/holdout_qini_mean": dg.MetadataValue.float(0.0215),
                **save_plot(figure, tmp_path / "hyperlift_uplift_v7_holdout_qini_curves.png", "holdout_qini_curves")}
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="uplift_challenger", metadata=metadata))

    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HYPERLIFT_HOME": str(tmp_path / "hyperlift")}
    server = subprocess.Popen([str(WEBSERVER), "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "dagster-webserver did not answer within 180 s"
                time.sleep(0.5)
        browser.get(f"{base}/assets/uplift_challenger")
        wait = WebDriverWait(browser, 90)
        wait.until(lambda b: "holdout_qini_curves" in b.find_element(By.TAG_NAME, "body").text)
        assert "0.0215" in browser.find_element(By.TAG_NAME, "body").text  # the metric as a number
        show = wait.until(ready.element_to_be_clickable((By.XPATH, "//*[text()='[Show Markdown]']")))
        browser.execute_script("arguments[0].click()", show)  # a banner or modal must not hide the plot either
        image = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "img[src^='data:image/png;base64']")))
        wait.until(lambda _: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 100  # decoded: a real picture
    finally:
        server.terminate()
        server.wait(timeout=30)
