"""The master over real loopback sockets, in front of real scrapoxy-instances.

What a scraper sees: statuses, headers, bytes, and which instance (egress address) served.
"""
from __future__ import annotations

import base64
import contextlib
import json
import socket

import pytest
import requests

from scrapoxy_server.models import Address, Endpoint
from tests.support import free_port, wait_until


def raw_exchange(port: int, payload: bytes, *, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_absolute_form_get_goes_through_an_instance_and_names_it(master, origin):
    mark = origin.mark()
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 200
    name = response.headers["x-cache-proxyname"]
    assert name in master.instances
    (seen,) = origin.since(mark)
    assert seen.client == master.sources[name]


def test_requests_rotate_over_every_instance_on_one_keep_alive_connection(master, origin):
    mark = origin.mark()
    with requests.Session() as session:
        names = [session.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
                 .headers["x-cache-proxyname"] for _ in range(6)]
    assert set(names) == {"p1", "p2", "p3"}
    assert origin.clients(mark) == set(master.sources.values())


def test_https_by_location_header_reaches_the_tls_origin_without_the_header(master, tls_origin):
    mark = tls_origin.mark()
    url = f"{tls_origin.url}/headers?x=1"
    response = requests.get(url.replace("https://", "http://"), proxies=master.proxies,
                            headers={"Location": url}, timeout=10)
    assert response.status_code == 200, response.text
    assert "x-cache-proxyname" in response.headers
    (seen,) = tls_origin.since(mark)
    assert seen.path == "/headers?x=1"
    assert seen.header("location") is None
    assert seen.client == master.sources[response.headers["x-cache-proxyname"]]


def test_absolute_https_request_line_is_spoken_as_tls_by_the_master(master, tls_origin):
    raw = raw_exchange(master.port, (
        f"GET {tls_origin.url}/headers HTTP/1.1\r\nHost: {tls_origin.netloc}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"x-cache-proxyname: p" in raw


def test_sticky_header_in_any_case_pins_the_instance_and_is_not_forwarded(master, origin):
    mark = origin.mark()
    for header in ("X-Cache-Proxyname", "x-cache-proxyname"):
        for _ in range(4):
            response = requests.get(f"{origin.url}/headers", proxies=master.proxies,
                                    headers={header: "p2"}, timeout=10)
            assert response.headers["x-cache-proxyname"] == "p2"
    seen = origin.since(mark)
    assert {r.client for r in seen} == {master.sources["p2"]}
    assert all(r.header("x-cache-proxyname") is None for r in seen)


def test_pin_to_a_gone_instance_is_served_by_another_that_says_so(master, origin):
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies,
                            headers={"x-cache-proxyname": "gone"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-cache-proxyname"] in {"p1", "p2", "p3"}


def test_connect_tunnel_is_served_through_an_instance(master, tls_origin, lab_ca):
    mark = tls_origin.mark()
    response = requests.get(f"{tls_origin.url}/headers", proxies=master.proxies,
                            verify=str(lab_ca.ca_file), timeout=10)
    assert response.status_code == 200
    (seen,) = tls_origin.since(mark)
    assert seen.client in master.sources.values()


def test_connect_reply_names_the_instance(master, tls_origin):
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as sock:
        sock.sendall(f"CONNECT {tls_origin.netloc} HTTP/1.1\r\nHost: {tls_origin.netloc}\r\n"
                     "x-cache-proxyname: p3\r\n\r\n".encode())
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"x-cache-proxyname: p3" in reply


def test_no_alive_instance_is_503_no_instance_with_retry_after(start_master, origin):
    master = start_master(endpoints=[], wait_for_instance=0.2)
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 503
    assert response.headers["x-scrapoxy-error"] == "no_instance"
    assert "Retry-After" in response.headers
    assert response.json()["error"] == "no_instance"


def test_request_waits_for_an_instance_that_comes_alive(start_master, origin, reactor_thread,
                                                         instance_endpoints):
    master = start_master(endpoints=[], wait_for_instance=10.0)
    endpoints, _ = instance_endpoints
    reactor_thread.reactor.callFromThread(
        reactor_thread.reactor.callLater, 0.3, master.pool.publish, endpoints[:1])
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-cache-proxyname"] == "p1"


def test_closed_instance_port_is_502_upstream_naming_the_instance(start_master, origin):
    dead = Endpoint("px", Address("127.0.0.1", free_port()))
    master = start_master(endpoints=[dead])
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 502
    assert response.headers["x-scrapoxy-error"] == "upstream"
    assert response.headers["x-cache-proxyname"] == "px"
    assert "px" in response.json()["message"]


def test_malformed_request_is_400_and_the_master_serves_the_next(master, origin):
    raw = raw_exchange(master.port, f"GET {origin.url}/ HTTP/1.1\r\nAccept : */*\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 400")
    assert b"x-scrapoxy-error: bad_request" in raw
    assert requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10).status_code == 200


def test_bad_location_is_400_without_upstream_traffic(master, origin):
    mark = origin.mark()
    for location in ("ftp://x/", "junk"):
        response = requests.get(f"{origin.url}/headers", proxies=master.proxies,
                                headers={"Location": location}, timeout=10)
        assert response.status_code == 400
        assert response.headers["x-scrapoxy-error"] == "bad_request"
    assert origin.since(mark) == []


def test_post_body_is_relayed_byte_for_byte(master, origin):
    body = bytes(range(256)) * 1000
    response = requests.post(f"{origin.url}/headers", data=body, proxies=master.proxies, timeout=10)
    echoed = json.loads(response.content)
    assert echoed["body_length"] == len(body)


def test_scraper_auth_407_without_credentials_and_200_with(start_master, origin):
    master = start_master(auth=("u", "p:w"))
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 407
    assert response.headers["Proxy-Authenticate"].startswith("Basic")
    authed = {"http": f"http://u:p%3Aw@127.0.0.1:{master.port}"}
    mark = origin.mark()
    response = requests.get(f"{origin.url}/headers", proxies=authed, timeout=10)
    assert response.status_code == 200
    assert origin.since(mark)[0].header("proxy-authorization") is None


def test_stats_count_requests_per_instance(master, origin):
    for _ in range(3):
        requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    # The answer leaves before the master's bookkeeping of it ends.
    wait_until(lambda: master.stats.total.requests == 3, timeout=5, message="3 recorded")
    assert sum(c.requests for c in master.stats.per_instance.values()) == 3


def test_each_request_gets_one_access_log_line(start_master, origin, caplog):
    master = start_master(access_log=True, auth=("u", "secret-pw"))
    authed = {"http": f"http://u:secret-pw@127.0.0.1:{master.port}"}
    with caplog.at_level("INFO", logger="scrapoxy.access"):
        response = requests.get(f"{origin.url}/headers?q=1", proxies=authed, timeout=10)
        requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)  # 407
    lines = [r.getMessage() for r in caplog.records if r.name == "scrapoxy.access"]
    assert len(lines) == 2
    name = response.headers["x-cache-proxyname"]
    assert f"GET {origin.url}/headers?q=1 via={name} status=200 error=-" in lines[0]
    assert "status=407 error=auth" in lines[1]
    assert all("secret-pw" not in line for line in lines)


def test_allow_and_deny_host_patterns_refuse_with_403_forbidden(start_master, origin, tls_origin):
    master = start_master(deny=("127.0.0.1",), allow=("*.example", "127.0.0.*"))
    for url in (f"{origin.url}/headers", f"{tls_origin.url}/headers"):
        response = requests.get(url.replace("https", "http"), proxies=master.proxies,
                                headers={"Location": url} if url.startswith("https") else {},
                                timeout=10)
        assert response.status_code == 403
        assert response.headers["x-scrapoxy-error"] == "forbidden"
    connect = raw_exchange(master.port, f"CONNECT {tls_origin.netloc} HTTP/1.1\r\n\r\n".encode())
    assert connect.startswith(b"HTTP/1.1 403")
    other = start_master(allow=("*.example",))
    response = requests.get(f"{origin.url}/headers", proxies=other.proxies, timeout=10)
    assert response.status_code == 403


@pytest.mark.parametrize("spelling", ["127.1", "2130706433", "0x7f.0.0.1", "127.0.0.1.",
                                      "[::ffff:127.0.0.1]"])
def test_deny_rules_hold_whatever_spelling_the_client_uses_for_the_host(start_master, origin,
                                                                         spelling):
    master = start_master(deny=("127.0.0.1",))
    mark = origin.mark()
    raw = raw_exchange(master.port, f"GET http://{spelling}:{origin.port}/headers HTTP/1.1\r\n"
                                     f"Host: x\r\nConnection: close\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 403"), raw[:200]
    connect = raw_exchange(master.port, f"CONNECT {spelling}:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert connect.startswith(b"HTTP/1.1 403")
    assert origin.since(mark) == []


def test_host_patterns_match_without_regard_to_case_or_a_trailing_dot(start_master, origin):
    master = start_master(deny=("*.Example.COM",))
    for host in ("www.example.com", "WWW.EXAMPLE.COM.", "a.b.example.com"):
        raw = raw_exchange(master.port, f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n"
                                         "Connection: close\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 403"), host


@pytest.mark.parametrize("target", ["CONNECT !!!:443", "GET http://a!b.example/",
                                    "GET http://exa$mple.com/", "CONNECT a,b:443"])
def test_junk_host_names_are_400_from_the_master_not_502_from_an_instance(master, target):
    raw = raw_exchange(master.port, f"{target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert b"x-scrapoxy-error: bad_request" in raw


def test_answers_and_tunnels_relayed_count_as_evidence_the_instance_works(master, origin,
                                                                           reactor_thread):
    """The manager skips the probe of an instance that served since its last round."""
    reactor_thread.call(master.pool.take_served)
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies,
                            headers={"x-cache-proxyname": "p2"}, timeout=10)
    assert response.status_code == 200
    assert reactor_thread.call(master.pool.take_served) == {"p2"}
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {origin.netloc} HTTP/1.1\r\nx-cache-proxyname: p3\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert reactor_thread.call(master.pool.take_served) == {"p3"}


def test_an_unreachable_instance_is_not_counted_as_serving(start_master, origin, reactor_thread):
    dead = Endpoint("gone", Address("127.0.0.1", free_port()))
    master = start_master(endpoints=[dead])
    reactor_thread.call(master.pool.take_served)
    response = requests.get(f"{origin.url}/headers", proxies=master.proxies, timeout=10)
    assert response.status_code == 502
    assert reactor_thread.call(master.pool.take_served) == set()


def test_untrusted_target_certificate_is_a_502_naming_the_target_not_the_instance(
        start_master, tls_origin, reactor_thread):
    master = start_master(trust_lab_ca=False)
    failures: list[str] = []
    reactor_thread.call(master.pool.on_failure, failures.append)
    url = f"{tls_origin.url}/headers"
    response = requests.get(url.replace("https://", "http://"), proxies=master.proxies,
                            headers={"Location": url}, timeout=10)
    assert response.status_code == 502
    assert response.headers["x-scrapoxy-error"] == "upstream"
    message = response.json()["message"]
    assert message.startswith(f"TLS with target {tls_origin.netloc} failed (through instance p")
    # OpenSSL's reason in words, not only "certificate verify failed":
    assert message.endswith("certificate verify failed: unable to get local issuer certificate")
    assert failures == []  # the instance did its job: it is not blamed


def test_unreachable_target_behind_a_scrapoxy_instance_reads_like_a_master_error(
        master, reactor_thread):
    failures: list[str] = []
    reactor_thread.call(master.pool.on_failure, failures.append)
    port = free_port()
    response = requests.get(f"http://127.0.0.1:{port}/x", proxies=master.proxies, timeout=10)
    assert response.status_code == 502
    assert response.headers["x-scrapoxy-error"] == "upstream"
    assert response.headers["x-cache-proxyname"] in master.instances
    body = response.json()
    assert body["error"] == "upstream" and f"127.0.0.1:{port}" in body["message"]
    assert failures == []  # the instance answered: the target is at fault


@contextlib.contextmanager
def canned_origin(reactor_thread, answer: bytes):
    """A loopback origin answering every request with the bytes ``answer``; yields its port."""
    from twisted.internet import protocol

    class Canned(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(answer)

    port = reactor_thread.call(lambda: reactor_thread.reactor.listenTCP(
        0, protocol.Factory.forProtocol(Canned), interface="127.0.0.1"))
    try:
        yield port.getHost().port
    finally:
        reactor_thread.call(port.stopListening)


def test_a_target_cannot_pass_its_answer_off_as_the_masters(master, reactor_thread):
    """A site answering with x-scrapoxy-error: no_instance would make a scraper wait for
    instances instead of counting a ban; x-cache-proxyname is the master's to say."""
    answer = (b"HTTP/1.1 200 OK\r\nx-scrapoxy-error: no_instance\r\n"
              b"x-cache-proxyname: nobody\r\nContent-Length: 2\r\n\r\nok")
    with canned_origin(reactor_thread, answer) as port:
        response = requests.get(f"http://127.0.0.1:{port}/", proxies=master.proxies, timeout=10)
    assert response.status_code == 200 and response.content == b"ok"
    assert "x-scrapoxy-error" not in response.headers
    assert response.headers["x-cache-proxyname"] in master.instances
    # An error status marked that way reads as an instance's error: never as no_instance.
    answer = (b"HTTP/1.1 503 Service Unavailable\r\nx-scrapoxy-error: no_instance\r\n"
              b"Retry-After: 3600\r\nContent-Length: 2\r\n\r\nno")
    with canned_origin(reactor_thread, answer) as port:
        response = requests.get(f"http://127.0.0.1:{port}/", proxies=master.proxies, timeout=10)
    assert response.status_code == 502 and response.headers["x-scrapoxy-error"] == "upstream"
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("body", [
    b"5\nhello\n0\n\n",                    # bare LF line ends
    b" 5 \r\nhello\r\n0\r\n\r\n",            # spaces around the size
    b"5;\x01\x02 junk\r\nhello\r\n0\r\n\r\n",  # control bytes in an extension
])
def test_a_malformed_chunked_response_is_a_502_not_passed_on(master, reactor_thread, body):
    """Relayed byte for byte, a sloppy framing would hang or break the client's decoder."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    with canned_origin(reactor_thread, answer) as port:
        raw = raw_exchange(master.port, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n"
                                         "Connection: close\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 502"), raw[:300]
    assert b"x-scrapoxy-error: upstream" in raw and b"malformed chunk" in raw
    assert b"hello" not in raw


@pytest.mark.parametrize("target", [
    "GET http://[::1%251]:{port}/",              # IPv6 zone identifier
    "GET http://[0:0:0:0:0:0:0:1%25lo]:{port}/",
    "GET http://[::]:{port}/",                   # unspecified: the instance itself
    "GET http://0.0.0.0:{port}/",
    "GET http://0:{port}/",
    "GET http://[::ffff:0.0.0.0]:{port}/",
    "CONNECT [::]:{port}",
    "CONNECT 0:{port}",
])
def test_hosts_that_dodge_deny_rules_are_400(start_master, origin, target):
    master = start_master(deny=("127.*", "::1", "localhost"))
    mark = origin.mark()
    raw = raw_exchange(master.port, target.format(port=origin.port).encode()
                       + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400"), raw[:300]
    assert origin.since(mark) == []


def test_https_to_a_host_written_as_one_number_reaches_its_ipv4_address(master, tls_origin):
    """``2130706433`` is 127.0.0.1 to a resolver; TLS must check the address, not crash on it."""
    mark = tls_origin.mark()
    url = f"https://2130706433:{tls_origin.port}/headers"
    raw = raw_exchange(master.port, f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       .encode(), timeout=15)
    # The lab certificate names 127.0.0.1: checked against the address, the request succeeds.
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert len(tls_origin.since(mark)) == 1


def test_a_trusted_certificate_without_names_is_refused_for_every_host(master, lab_ca):
    """Twisted's own check lets a certificate without subjectAltName pass (it logs CRITICAL
    and keeps the chain's verdict); the master must refuse it: it names no host at all."""
    from tests.lab.origin import Origin

    nameless = lab_ca.issue("nameless", dns_names=(), ip_addresses=(), common_name="evil.example")
    server = Origin(host="127.0.0.1", cert=nameless)
    try:
        response = requests.get(f"http://127.0.0.1:{server.port}/headers", proxies=master.proxies,
                                headers={"Location": f"https://127.0.0.1:{server.port}/headers"},
                                timeout=15)
    finally:
        server.close()
    assert response.status_code == 502, response.text
    assert response.headers["x-scrapoxy-error"] == "upstream"
    assert "subjectAltName" in response.json()["message"]


def by_location(master, url: str) -> requests.Response:
    """An HTTPS-by-header request for ``url`` through ``master``."""
    return requests.get(url.replace("https://", "http://", 1), proxies=master.proxies,
                        headers={"Location": url}, timeout=15)


@pytest.mark.parametrize("host, sni", [("localhost", "localhost"), ("127.0.0.1", None)])
def test_https_by_location_names_a_dns_host_in_sni_and_never_an_address(master, tls_origin,
                                                                         host, sni):
    response = by_location(master, f"https://{host}:{tls_origin.port}/headers")
    assert response.status_code == 200, response.text
    assert response.json()["sni"] == sni


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_trusted_certificate_for_another_name_is_a_502_naming_the_mismatch(master, lab_ca,
                                                                             host):
    from tests.lab.origin import Origin

    other = lab_ca.issue("other", dns_names=("other.example",), ip_addresses=("127.0.0.9",))
    server = Origin(host="127.0.0.1", cert=other)
    try:
        response = by_location(master, f"https://{host}:{server.port}/headers")
    finally:
        server.close()
    assert response.status_code == 502, response.text
    assert response.headers["x-scrapoxy-error"] == "upstream"
    assert response.json()["message"].endswith(f"the certificate is not valid for {host}")


def test_with_tls_verify_off_an_untrusted_certificate_is_accepted_and_sni_still_sent(
        start_master, tls_origin):
    master = start_master(trust_lab_ca=False, tls_verify=False)
    response = by_location(master, f"https://localhost:{tls_origin.port}/headers")
    assert response.status_code == 200, response.text
    assert response.json()["sni"] == "localhost"


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("host", ["a..b", ".localhost", "x" * 64 + ".example"],
                         ids=["empty-label", "leading-dot", "label-over-63"])
def test_a_host_name_tls_cannot_carry_is_400_and_the_master_serves_on(start_master, origin,
                                                                      verify, host):
    master = start_master(tls_verify=verify)
    response = requests.get("http://target.invalid/", proxies=master.proxies,
                            headers={"Location": f"https://{host}:443/"}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.headers["x-scrapoxy-error"] == "bad_request"
    assert "not a host name TLS can speak to" in response.json()["message"]
    assert requests.get(f"{origin.url}/headers", proxies=master.proxies,
                        timeout=10).status_code == 200


@pytest.mark.parametrize("location", ["https://h/a HTTP/1.0", "https://h/a\tb", "http://h/a b"])
def test_a_location_with_spaces_or_tabs_is_400_before_any_instance(master, location):
    raw = raw_exchange(master.port, f"GET /x HTTP/1.1\r\nHost: x\r\nLocation: {location}\r\n"
                                     "Connection: close\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 400"), raw[:300]
    assert b"x-scrapoxy-error: bad_request" in raw and b"x-cache-proxyname" not in raw


def _session_proxies(master, token: str) -> dict[str, str]:
    url = f"http://%3Bsession%3D{token}:x@127.0.0.1:{master.port}"
    return {"http": url, "https": url}


def test_a_session_token_in_the_proxy_username_pins_every_mode(master, origin, tls_origin):
    """``;session=TOKEN`` (no scraper auth) keeps plain http, https by header and CONNECT on
    the instance the session started on; another token is free to go elsewhere."""
    names = set()
    for token in ("alpha", "beta"):
        proxies = _session_proxies(master, token)
        seen = set()
        for _ in range(4):
            plain = requests.get(f"{origin.url}/headers", proxies=proxies, timeout=10)
            seen.add(plain.headers["x-cache-proxyname"])
            url = f"{tls_origin.url}/headers"
            by_header = requests.get(url.replace("https://", "http://"), proxies=proxies,
                                     headers={"Location": url}, timeout=10)
            seen.add(by_header.headers["x-cache-proxyname"])
        tunnel = raw_exchange(master.port, (
            f"CONNECT {tls_origin.netloc} HTTP/1.1\r\nProxy-Authorization: Basic "
            + base64.b64encode(f";session={token}:x".encode()).decode() + "\r\n\r\n").encode(),
            timeout=1.0)
        seen.add(tunnel.split(b"x-cache-proxyname: ")[1].split(b"\r\n")[0].decode())
        assert len(seen) == 1, (token, seen)
        names |= seen
    assert len(names) == 2  # the second session started on the next instance


def test_session_pins_are_bounded_and_forget_the_least_recently_used():
    from scrapoxy_server.master.chooser import SessionPins

    pins = SessionPins(limit=3)
    for token in ("a", "b", "c"):
        pins.pin(token, f"p-{token}")
    assert pins.get("a") == "p-a"  # a is now the most recently used
    pins.pin("d", "p-d")
    assert pins.get("b") is None and pins.get("a") == "p-a" and len(pins) == 3


def test_the_access_log_never_shows_credentials_of_a_refused_target(start_master, caplog):
    master = start_master(access_log=True)
    with caplog.at_level("INFO", logger="scrapoxy.access"):
        raw = raw_exchange(master.port, b"GET http://bob:hunter2@127.0.0.1:9/ HTTP/1.1\r\n"
                                         b"Host: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    lines = [r.getMessage() for r in caplog.records if r.name == "scrapoxy.access"]
    assert len(lines) == 1 and "hunter2" not in lines[0] and "bob" not in lines[0]
    assert "http://***@127.0.0.1:9/" in lines[0]


def test_ipv6_literal_targets_work_in_every_mode(master, origin6):
    url = f"{origin6.url}/headers"
    plain = requests.get(url, proxies=master.proxies, timeout=10)
    assert plain.status_code == 200
    assert plain.json()["path"] == "/headers"
    tunnel = raw_exchange(master.port, f"CONNECT {origin6.netloc} HTTP/1.1\r\n\r\n".encode(),
                          timeout=1.0)
    assert tunnel.startswith(b"HTTP/1.1 200")


def test_expect_100_continue_is_relayed_before_the_body_is_sent(master, origin):
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as sock:
        sock.sendall(f"POST {origin.url}/echo HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                     "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode())
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"hello")
        answer = b""
        while not answer.endswith(b"hello"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
