"""Swagger UI served by the server itself (issue 13): ``/schema/swagger`` works without internet."""

from __future__ import annotations

import gzip
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import expect

from careshare.host.routes.docs import ASSETS, HERE

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

STORED = HERE  # the vendored files, gzipped


async def test_the_page_names_only_this_servers_assets_and_each_is_served(client: AsyncTestClient[Any]) -> None:
    page = (await client.get("/schema/swagger")).text
    addresses = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page)
    assert sorted(addresses) == sorted(
        f"{ASSETS}/{name}" for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css")
    )
    assert "://" not in page.split("<body>")[0]  # nothing from another host in the head
    for address in addresses:
        name = address.rsplit("/", 1)[1]
        stored = (STORED / f"{name}.gz").read_bytes()
        zipped = await client.get(address, headers={"Accept-Encoding": "gzip, br"})
        assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == gzip.decompress(stored)  # httpx unzips what the server sent as stored
        assert zipped.headers["content-type"].startswith("text/css" if name.endswith(".css") else "text/javascript")
        assert "immutable" in zipped.headers["cache-control"] and zipped.headers["vary"] == "Accept-Encoding"
        plain = await client.get(address, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert plain.content == gzip.decompress(stored)
    assert (await client.get(f"{ASSETS}/../../healthz")).status_code == 404
    assert (await client.get(f"{ASSETS}/index.html")).status_code == 404


def test_swagger_ui_lists_the_operations_with_the_internet_cut_off(page: Any, console_server: str) -> None:
    here = urlsplit(console_server).netloc
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{console_server}/schema/swagger")
    expect(page.locator(".opblock").first).to_be_visible()
    operations = page.locator(".opblock").count()
    documented = httpx.get(f"{console_server}/schema/openapi.json").json()["paths"]
    methods = sum(
        1 for item in documented.values() for m in item if m in {"get", "head", "post", "put", "patch", "delete"}
    )
    assert operations == methods
    assert elsewhere == [] and page.console_errors == []
