"""The bytes of CONNECT, both ways: what the master asks an instance, what it tells a client."""
from __future__ import annotations

import base64

from twisted.internet.testing import StringTransport

from scrapoxy_server.master.answers import connect_established
from scrapoxy_server.master.upstream import Tunnel, UpstreamConnection
from scrapoxy_server.models import Address, Credentials, Endpoint


def _connect_line(endpoint: Endpoint, tunnel: Tunnel) -> bytes:
    connection = UpstreamConnection(pool=None, key=(), endpoint=endpoint, tunnel=tunnel)
    transport = StringTransport()
    connection.makeConnection(transport)
    return transport.value()


def test_connect_to_an_instance_names_the_target_in_authority_form_with_its_credentials():
    endpoint = Endpoint("p1", Address("10.0.0.1", 3128), Credentials("inst", "p@ss:wörd"))
    sent = _connect_line(endpoint, Tunnel("example.com", 443))
    token = base64.b64encode("inst:p@ss:wörd".encode()).decode()
    assert sent == (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
                    b"Proxy-Authorization: Basic " + token.encode() + b"\r\n\r\n")


def test_connect_to_an_ipv6_target_brackets_it_and_sends_no_credentials_when_none():
    sent = _connect_line(Endpoint("p1", Address("127.0.0.1", 3128)), Tunnel("::1", 8443))
    assert sent == b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"


def test_the_client_is_told_the_tunnel_is_up_and_through_which_instance():
    assert connect_established("local-2") == (
        b"HTTP/1.1 200 Connection established\r\nx-cache-proxyname: local-2\r\n\r\n")
