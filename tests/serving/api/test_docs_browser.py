"""The API's documentation page as a user sees it: Swagger UI rendered by Chromium, offline, showing the decision
operation and its example."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from serving.main import create_app
from tests.browser import browser, free_port, serve_in_thread  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.browser


def test_the_docs_page_shows_the_decision_operation_with_a_working_example(browser, serving_settings):  # noqa: F811
    with serve_in_thread(create_app(serving_settings), free_port()) as base:
        browser.get(f"{base}/docs")
        wait = WebDriverWait(browser, 60)
        operation = wait.until(ready.visibility_of_element_located(
            (By.CSS_SELECTOR, "#operations-decisions-decide_v1_decisions_post, [id^='operations-'][id*='decisions_post']")
        ))
        assert "/v1/decisions" in operation.text
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        body = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, ".opblock-body")))
        wait.until(lambda _: "user_id" in body.text)
        assert "surface" in body.text
        # Nothing was fetched from a CDN: the page rendered with the service's own assets.
        requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert requested and all(url.startswith(base) for url in requested), requested
