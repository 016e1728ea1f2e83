"""``/docs`` works on an isolated network: the page and its assets come from this server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helpers import api

pytestmark = pytest.mark.realtime


async def test_the_api_docs_load_nothing_from_another_host(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (_, a), a.client() as c:
        page = await c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert urls, page.text
        assert all(u.startswith("/") for u in urls), urls  # no http(s)://, no CDN
        assert "//cdn" not in page.text and "https://" not in page.text
        for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
            r = await c.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000, asset
        assert (await c.get("/openapi.json")).json()["info"]["title"].startswith("Baton")
