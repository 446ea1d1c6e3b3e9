"""TLS toward targets in HTTPS-by-header mode: one connection creator per hostname, cached.

One OpenSSL context serves every target: it is built when the master starts, so a CA bundle
that cannot be loaded stops the start (``TlsSetupError``) instead of failing each request.
"""
from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from service_identity.exceptions import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.python.failure import Failure
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from ..addresses import is_ip_address
from .http1 import HttpError

_MAX_CACHED = 4096


class TlsSetupError(ValueError):
    """The trust store cannot be built (an unreadable or malformed CA bundle)."""


def client_context(*, verify: bool, ca_file: str | None) -> SSL.Context:
    """The context for connections to targets: verifying against the system store plus
    ``ca_file``, or (``verify=False``) accepting any certificate."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # idle connections hold no TLS buffers
    if not verify:
        context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        return context
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: args[-1])
    context.set_default_verify_paths()
    if ca_file:
        try:
            context.load_verify_locations(ca_file)
        except SSL.Error as exc:
            raise TlsSetupError(f"cannot load {ca_file!r} as a PEM bundle of CA certificates: "
                                f"{_openssl_reason(exc)}") from None
    return context


def _openssl_reason(exc: SSL.Error) -> str:
    """The first reason OpenSSL gives ("no such file", "no certificate or crl found")."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return next((entry[2] for entry in errors if len(entry) > 2 and entry[2]), str(exc))


@implementer(IOpenSSLClientConnectionCreator)
class _ClientTls:
    """SNI for host names and, when verifying, a name check that fails closed.

    Twisted's own check lets the handshake go on when the certificate has no
    subjectAltName at all (service_identity raises CertificateError, not VerificationError;
    Twisted logs it as CRITICAL and keeps OpenSSL's verdict on the chain): any certificate a
    trusted CA issued without names would pass for every host. Here every failure to match
    the name fails the handshake, with the cause as the connection's error.
    """

    __slots__ = ("_context", "_id", "_sni")

    def __init__(self, hostname: str, context: SSL.Context, *, verify: bool) -> None:
        self._context = context
        is_ip = is_ip_address(hostname)
        self._id = None
        try:  # UnicodeError (an empty or too long label) is a ValueError
            self._sni = None if is_ip else hostname.encode("idna")
            if verify:
                self._id = IPAddress_ID(hostname) if is_ip else DNS_ID(hostname)
        except ValueError as exc:
            raise HttpError(f"not a host name TLS can speak to: {hostname!r} ({exc})") from None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        if self._id is not None:
            connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                                  _name_check(tlsProtocol, self._id))
        connection.set_app_data(tlsProtocol)
        return connection


class CertificateRejected(SSL.Error):
    """The target's certificate failed the check: its chain, or the host name."""


def _name_check(tls_protocol: Any, service_id: Any) -> Any:
    """The verify callback: OpenSSL's verdict on each certificate of the chain, then the
    host name on the leaf; a refusal fails the handshake with its reason in words."""
    holder = [tls_protocol]  # dropped at the verdict: no connection <-> protocol cycle

    def verify(connection: SSL.Connection, cert: crypto.X509, error: int, depth: int,
               ok: int) -> bool:
        if ok and depth != 0:
            return True
        protocol = holder.pop() if holder else None
        if not ok:
            rejected = CertificateRejected(f"certificate verify failed: {_x509_reason(error)}")
        else:
            try:
                verify_service_identity(extract_patterns(cert), [service_id], [])
                return True
            except Exception as exc:  # noqa: BLE001 - VerificationError, CertificateError
                rejected = _name_error(service_id, exc)
        if protocol is not None:
            protocol.failVerification(Failure(rejected))
        return False

    return verify


def _x509_reason(error: int) -> str:
    """OpenSSL's words for a verify error code ("certificate has expired")."""
    try:
        from OpenSSL._util import ffi, lib  # pyOpenSSL exposes no public lookup

        return ffi.string(lib.X509_verify_cert_error_string(error)).decode("ascii", "replace")
    except Exception:  # noqa: BLE001 - a missing binding must not fail the handshake's report
        return f"X.509 error {error}"


def _name_error(service_id: Any, exc: Exception) -> CertificateRejected:
    host = getattr(service_id, "hostname", None) or getattr(service_id, "ip", "")
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(exc, VerificationError):
        return CertificateRejected(f"the certificate is not valid for {host}")
    # CertificateError: no subjectAltName at all, so no host name can match.
    return CertificateRejected(f"the certificate names no host (no subjectAltName), so it "
                               f"is not valid for {host}")


class TlsCreators:
    """Connection creators by hostname over one shared context; raises ``TlsSetupError``
    when the trust store cannot be built."""

    def __init__(self, *, verify: bool, ca_file: str | None) -> None:
        self._verify = verify
        self._context = client_context(verify=verify, ca_file=ca_file)
        self._cache: dict[str, _ClientTls] = {}

    def for_host(self, hostname: str) -> _ClientTls:
        """The connection creator for ``hostname``; HttpError (400) when no TLS name can be."""
        creator = self._cache.get(hostname)
        if creator is None:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            creator = self._cache[hostname] = _ClientTls(hostname, self._context,
                                                         verify=self._verify)
        return creator
