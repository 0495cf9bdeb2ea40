"""The API documents itself offline: /docs and /redoc load Swagger UI and ReDoc from the service, not a CDN."""

import re
from importlib.metadata import version

import pytest
from fastapi.testclient import TestClient

from serving.main import create_app


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]), ("/redoc", ["redoc.standalone.js"]),
])
def test_the_docs_pages_load_every_script_and_style_from_the_service(client, page, assets):
    html = client.get(page).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and not [u for u in urls if u.startswith(("http://", "https://", "//"))], urls  # nothing remote
    for asset in assets:
        (url,) = [u for u in urls if u.endswith(asset)]
        served = client.get(url)
        assert served.status_code == 200 and len(served.content) > 10_000, url


def test_the_documented_version_is_the_package_version(client):
    assert client.get("/openapi.json").json()["info"]["version"] == version("hyperlift")
