"""The open endpoints: /ip (health-check echo), /healthz, and the GUI page with no third party."""
from __future__ import annotations

import re
from html.parser import HTMLParser


def test_ip_answers_the_callers_address_as_plain_text(client):
    response = client.get("/ip", environ_base={"REMOTE_ADDR": "127.0.0.7"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "127.0.0.7"
    assert response.headers["Cache-Control"] == "no-store"


def test_ip_answers_ipv6_callers_too(client):
    response = client.get("/ip", environ_base={"REMOTE_ADDR": "::1"})
    assert response.get_data(as_text=True) == "::1"


def test_healthz_is_ok_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "ok"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "action") and value is not None:
                self.urls.append(value)


def _is_local(url: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, re.I) and not url.startswith("data:")


def test_gui_page_is_served_at_root_with_only_local_assets(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    parser = _Links()
    parser.feed(html)
    assert "/static/app.js" in parser.urls
    assert "/static/app.css" in parser.urls
    assert all(_is_local(url) for url in parser.urls), parser.urls
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_gui_assets_reference_no_other_host(client):
    for path in ("/static/app.js", "/static/app.css"):
        with client.get(path) as response:
            text = response.get_data(as_text=True)
        assert not re.search(r"https?://", text), path
        assert "@import" not in text


def test_gui_script_calls_the_api_with_basic_auth_from_session_storage(client):
    with client.get("/static/app.js") as response:
        script = response.get_data(as_text=True)
    assert "sessionStorage" in script
    assert '"Basic "' in script
    assert "/api/instances/stop" in script
    assert "/api/scaling" in script
    # Rendering from data must not create markup.
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
