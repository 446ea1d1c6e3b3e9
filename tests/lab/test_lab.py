"""The lab itself works: ORIGIN records what the wire carried, and stock tinyproxy and squid
proxy plain HTTP and CONNECT from their own egress address, so interoperability tests built on
them test the master, not the lab."""
from __future__ import annotations

import hashlib
import socket
import time
import tomllib

import pytest
import requests

from tests.lab.origin import CHUNKS, GZIP_BODY, SITE_PAGES, big_body
from tests.lab.server import lab_config, to_toml

STOCK = ["tinyproxy_instance", "squid_instance"]


def _raw_exchange(host: str, port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or the deadline passes."""
    deadline = time.monotonic() + timeout
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_origin_records_raw_target_and_headers_in_their_case(origin):
    mark = origin.mark()
    raw = _raw_exchange(
        origin.host, origin.port,
        b"GET /headers/%7Ea%2Fb?q=1&q=2 HTTP/1.1\r\nHost: lab\r\nX-MiXeD-Case: v\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    [seen] = origin.since(mark)
    assert seen.target == b"/headers/%7Ea%2Fb?q=1&q=2"
    assert ("X-MiXeD-Case", "v") in seen.headers
    assert seen.client == "127.0.0.1"
    assert b'"path": "/headers/%7Ea%2Fb?q=1&q=2"' in raw


def test_origin_echo_reports_body_length_and_sha256(origin):
    body = b"x" * 1000
    answer = requests.post(origin.url + "/anything", data=body, timeout=5).json()
    assert answer["method"] == "POST"
    assert answer["body_length"] == 1000
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_origin_decodes_a_chunked_request_body(origin):
    raw = _raw_exchange(
        origin.host, origin.port,
        b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert raw.endswith(b"\r\n\r\nhello")


def test_origin_streams_chunks_with_the_requested_delay(origin):
    started = time.monotonic()
    arrivals = []
    with requests.get(origin.url + "/chunked?delay=0.3", stream=True, timeout=5) as response:
        for chunk in response.raw.read_chunked(decode_content=False):
            arrivals.append((chunk, time.monotonic() - started))
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert [chunk for chunk, _ in arrivals] == list(CHUNKS)
    assert arrivals[0][1] < 0.3 <= arrivals[1][1]


def test_origin_sends_gzip_untouched_and_head_without_body(origin):
    with requests.get(origin.url + "/gzip", stream=True, timeout=5) as response:
        assert response.raw.read(decode_content=False) == GZIP_BODY
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(GZIP_BODY))
    head = requests.head(origin.url + "/big?n=1048576", timeout=5)
    assert head.headers["Content-Length"] == "1048576" and head.content == b""
    assert requests.get(origin.url + "/big?n=70000", timeout=5).content == big_body(70000)


def test_origin_redirects_with_location_byte_for_byte(origin):
    response = requests.get(origin.url + "/redirect?to=/b&code=301", allow_redirects=False,
                            timeout=5)
    assert response.status_code == 301
    assert response.headers["Location"] == "/b"


def test_origin_hop_route_answers_hop_by_hop_headers(origin):
    response = requests.get(origin.url + "/hop", timeout=5)
    assert response.headers["Connection"] == "X-Origin-Hop"
    assert response.headers["X-Origin-Hop"] == "1"
    assert response.headers["Keep-Alive"] == "timeout=9"


def test_site_pages_all_link_to_site_pages(origin):
    for path, title in SITE_PAGES.items():
        page = requests.get(origin.url + path, timeout=5)
        assert page.status_code == 200
        assert f"<title>{title}</title>" in page.text
    assert requests.get(origin.url + "/site/nope.html", timeout=5).status_code == 404


def test_tls_origin_is_verified_with_the_lab_ca(tls_origin, lab_ca):
    response = requests.get(tls_origin.url + "/ip", verify=str(lab_ca.ca_file), timeout=5)
    assert response.text == "127.0.0.1"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_origin.url + "/ip", timeout=5)  # the system store does not trust it
    named = requests.get(f"https://localhost:{tls_origin.port}/headers",
                         verify=str(lab_ca.ca_file), timeout=5)
    assert named.json()["sni"] == "localhost"


def test_ipv6_origin_answers_on_loopback(origin6):
    assert origin6.url.startswith("http://[::1]:")
    assert requests.get(origin6.url + "/ip", timeout=5).text == "::1"


@pytest.mark.parametrize("proxy_fixture", STOCK)
def test_stock_proxy_egresses_from_its_source_address(request, proxy_fixture, origin):
    proxy = request.getfixturevalue(proxy_fixture)
    mark = origin.mark()
    response = requests.get(origin.url + "/headers", proxies=proxy.proxies(), timeout=10)
    assert response.status_code == 200
    assert response.json()["client"] == proxy.source
    assert origin.clients(since=mark) == {proxy.source}


@pytest.mark.parametrize("proxy_fixture", STOCK)
def test_stock_proxy_tunnels_connect_to_the_tls_origin(request, proxy_fixture, tls_origin,
                                                       lab_ca):
    proxy = request.getfixturevalue(proxy_fixture)
    mark = tls_origin.mark()
    response = requests.get(tls_origin.url + "/headers", proxies=proxy.proxies(),
                            verify=str(lab_ca.ca_file), timeout=10)
    assert response.status_code == 200
    assert tls_origin.clients(since=mark) == {proxy.source}


@pytest.mark.parametrize("proxy_fixture", STOCK)
def test_stock_proxy_reaches_the_ipv6_origin(request, proxy_fixture, origin6):
    proxy = request.getfixturevalue(proxy_fixture)
    response = requests.get(origin6.url + "/ip", proxies=proxy.proxies(), timeout=10)
    assert response.status_code == 200 and response.text == "::1"


def test_squid_adds_no_forwarding_or_cache_headers(squid_instance, origin):
    response = requests.get(origin.url + "/headers", proxies=squid_instance.proxies(), timeout=10)
    seen = {name.lower() for name, _ in response.json()["headers"]}
    assert not seen & {"via", "x-forwarded-for", "forwarded"}
    assert not {name.lower() for name in response.headers} & {"via", "x-cache", "x-cache-lookup"}


def test_tinyproxy_with_credentials_refuses_clients_without_them(stock_proxies, origin):
    proxy = stock_proxies("tinyproxy", source="127.0.0.203", username="inst", password="secret")
    refused = requests.get(origin.url + "/ip", proxies={"http": proxy.url}, timeout=10)
    assert refused.status_code == 407
    allowed = requests.get(origin.url + "/ip", proxies=proxy.proxies(), timeout=10)
    assert allowed.text == "127.0.0.203"


def test_lab_server_config_is_valid_toml_for_the_server(lab_ca, tmp_path):
    config = lab_config(master_port=18888, commander_port=18889, ca_file=lab_ca.ca_file,
                        state_file=tmp_path / "state.json")
    parsed = tomllib.loads(to_toml(config))
    assert parsed == config
    server_config = pytest.importorskip("scrapoxy_server.config")
    loaded = server_config.from_dict(parsed)
    assert loaded.commander.password == "pw"
    assert loaded.master.ca_file == str(lab_ca.ca_file)
    assert (loaded.scaling.min, loaded.scaling.required, loaded.scaling.max) == (3, 3, 3)
