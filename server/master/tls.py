"""TLS toward targets in HTTPS-by-header mode: one connection creator per hostname, cached."""
from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.python.failure import Failure
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from ..addresses import is_ip_address
from .http1 import HttpError

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
        self._sni = not is_ip_address(hostname)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._sni:
            connection.set_tlsext_host_name(self._hostname)
        connection.set_app_data(tlsProtocol)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _Verified:
    """Twisted's client TLS options, with a name check that fails closed.

    Twisted's own check lets the handshake go on when the certificate has no
    subjectAltName at all (service_identity raises CertificateError, not VerificationError;
    Twisted logs it as CRITICAL and keeps OpenSSL's verdict on the chain): any certificate a
    trusted CA issued without names would pass for every host. Here every failure to match
    the name fails the handshake, with the cause as the connection's error.
    """

    def __init__(self, hostname: str, trust: Any) -> None:
        self._inner = ssl.optionsForClientTLS(hostname, trustRoot=trust)
        try:
            self._id = IPAddress_ID(hostname) if is_ip_address(hostname) else DNS_ID(hostname)
        except ValueError as exc:
            raise HttpError(f"not a host name TLS can verify: {hostname!r} ({exc})") from None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._inner.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                              _name_check(tlsProtocol, self._id))
        return connection


def _name_check(tls_protocol: Any, service_id: Any) -> Any:
    holder = [tls_protocol]  # dropped after the leaf check: no connection <-> protocol cycle

    def verify(connection: SSL.Connection, cert: crypto.X509, error: int, depth: int,
               ok: int) -> bool:
        if depth != 0 or not ok:
            return bool(ok)
        protocol = holder.pop() if holder else None
        try:
            verify_service_identity(extract_patterns(cert), [service_id], [])
        except Exception:  # noqa: BLE001 - VerificationError, CertificateError: both refuse
            if protocol is not None:
                protocol.failVerification(Failure())
            return False
        return True

    return verify


class TlsCreators:
    def __init__(self, *, verify: bool, ca_file: str | None) -> None:
        self._verify = verify
        self._trust = _SystemPlusFile(ca_file)
        self._cache: dict[str, Any] = {}
        self._unverified_context: SSL.Context | None = None

    def for_host(self, hostname: str) -> Any:
        """The connection creator for ``hostname``; HttpError (400) when no TLS name can be."""
        creator = self._cache.get(hostname)
        if creator is None:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            creator = self._cache[hostname] = self._build(hostname)
        return creator

    def _build(self, hostname: str) -> Any:
        if self._verify:
            return _Verified(hostname, self._trust)
        if self._unverified_context is None:
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
            self._unverified_context = context
        return _Unverified(hostname, self._unverified_context)
