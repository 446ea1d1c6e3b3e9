"""TLS toward targets in HTTPS-by-header mode: one connection creator per hostname, cached."""
from __future__ import annotations

import ipaddress
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from zope.interface import implementer

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

_MAX_CACHED = 4096


@implementer(IOpenSSLTrustRoot)
class _SystemPlusFile:
    """The system trust store plus an extra PEM bundle (e.g. a private or test CA)."""

    def __init__(self, ca_file: str | None) -> None:
        self._ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        if self._ca_file:
            context.load_verify_locations(self._ca_file)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """SNI without certificate checks, for ``master.tls_verify = false``."""

    def __init__(self, hostname: str, context: SSL.Context) -> None:
        self._hostname = hostname.encode("idna")
        self._context = context
        try:
            ipaddress.ip_address(hostname)
            self._sni = False
        except ValueError:
            self._sni = True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._sni:
            connection.set_tlsext_host_name(self._hostname)
        connection.set_app_data(tlsProtocol)
        return connection


class TlsCreators:
    def __init__(self, *, verify: bool, ca_file: str | None) -> None:
        self._verify = verify
        self._trust = _SystemPlusFile(ca_file)
        self._cache: dict[str, Any] = {}
        self._unverified_context: SSL.Context | None = None

    def for_host(self, hostname: str) -> Any:
        creator = self._cache.get(hostname)
        if creator is None:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            creator = self._cache[hostname] = self._build(hostname)
        return creator

    def _build(self, hostname: str) -> Any:
        if self._verify:
            return ssl.optionsForClientTLS(hostname, trustRoot=self._trust)
        if self._unverified_context is None:
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
            self._unverified_context = context
        return _Unverified(hostname, self._unverified_context)
