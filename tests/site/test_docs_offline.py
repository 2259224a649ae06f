"""The API docs work without the internet: Swagger UI and Redoc reference only the app's own
static files (drf-spectacular-sidecar), and `/` leads to the admin."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

EXTERNAL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)


class _Refs(HTMLParser):
    """Every URL-valued attribute, and the text of inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
        self._in_code = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.inline.append(data)


def _refs(client: Client, url_name: str) -> _Refs:
    response = client.get(reverse(url_name))
    assert response.status_code == 200
    parser = _Refs()
    parser.feed(response.content.decode())
    return parser


@pytest.mark.parametrize("url_name", ["swagger", "redoc"])
def test_it_loads_no_external_url_on_the_api_docs_page(client: Client, url_name: str) -> None:
    refs = _refs(client, url_name)
    external = [u for u in refs.urls if EXTERNAL.match(u)]
    external += EXTERNAL.findall("\n".join(refs.inline))
    assert external == []
    prefix = "/" + settings.STATIC_URL.lstrip("/")
    static = [u for u in refs.urls if u.startswith(prefix)]
    assert any(u.endswith(".js") for u in static), refs.urls
    missing = [u for u in static if finders.find(u.removeprefix(prefix)) is None]
    assert missing == []


def test_it_turns_off_the_swagger_validator_badge(client: Client) -> None:
    page = client.get(reverse("swagger")).content.decode()
    assert re.search(r'"validatorUrl":\s*null', page)


def test_it_redirects_the_root_to_the_admin(client: Client) -> None:
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))
