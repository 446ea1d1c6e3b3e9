"""Route Scrapy requests through the Scrapoxy master.

``http://`` requests go to the master as ordinary absolute-form proxy requests. ``https://``
requests use the master's "HTTPS by header" mode: the request is downloaded as
``http://host[:port]/path?query`` through the master, with the real URL in a ``Location`` request
header, so that the master sees (and can route on) the headers instead of an opaque CONNECT
tunnel. The response handed back to the rest of Scrapy carries the original https URL and the
original request, so links, redirects, cookies and retries behave as if Scrapy had fetched the
https URL directly.

Where it sits (``DOWNLOADER_MIDDLEWARES``): priority :data:`DEFAULT_PRIORITY` (745), i.e. after
RetryMiddleware (550), RedirectMiddleware (600) and CookiesMiddleware (700) and just before
HttpProxyMiddleware (750). ``process_request`` runs in increasing priority order and
``process_response``/``process_exception`` in decreasing order, so the rewrite happens after
cookies were attached for the https URL and is undone before cookies are extracted, redirects are
resolved or retries are built: they all only ever see the https request. HttpProxyMiddleware runs
after the rewrite and keeps the ``Proxy-Authorization`` this middleware sets for the master.
Middlewares above 745 (DownloaderStats 850, HttpCache 900) see the rewritten ``http://`` request.

CONNECT mode (``SCRAPOXY_HTTPS_MODE = "connect"``): https requests are left to Scrapy's normal
CONNECT tunnel through the master (TLS end to end, the master sees no header). Every https
request then carries a session token in the proxy username, ``USER;session=TOKEN``, which pins
its tunnel to one instance: its session's token, or a lane's (see
:mod:`scrapoxy_scrapy.tunnels`); the token is in ``meta["scrapoxy_session_token"]``, which is
how BanMiddleware names the instance to stop. ``x-cache-proxyname`` is neither sent nor seen for
https in this mode.

Per-request ``request.meta`` keys:

- ``scrapoxy_session``: any hashable key; opt-in stickiness. Requests of one session send
  ``x-cache-proxyname`` naming the instance that served the session's last response.
- ``scrapoxy_proxyname``: set by this middleware on each response's request to the
  ``x-cache-proxyname`` the master answered (read it as ``response.meta["scrapoxy_proxyname"]``).
- ``dont_scrapoxy``: ``True`` sends the request directly, not through the master.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.utils import httpobj

from scrapoxy_scrapy.policy import MASTER_ERROR_HEADER
from scrapoxy_scrapy.sessions import SESSION_KEY, SessionPins
from scrapoxy_scrapy.settings import HTTPS_MODES
from scrapoxy_scrapy.state import crawl_state
from scrapoxy_scrapy.tunnels import TOKEN_KEY, TunnelTokens

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

DEFAULT_PRIORITY = 745
PROXYNAME_HEADER = b"x-cache-proxyname"
# The original https URL of a request currently rewritten for "HTTPS by header"; present only
# between this middleware's process_request and process_response/process_exception.
_REWRITTEN_FROM = "_scrapoxy_https_url"
# Set while the x-cache-proxyname header of a request is the one this middleware pinned.
_PINNED = "_scrapoxy_pinned"


@dataclass(frozen=True)
class Master:
    """Where the master listens, and the ``Proxy-Authorization`` value it expects (if any)."""

    url: str
    authorization: bytes | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    auth_encoding: str = "latin-1"

    def session_authorization(self, token: str) -> bytes:
        """``Proxy-Authorization`` for a CONNECT pinned to session ``token``."""
        return basic_authorization(f"{self.username or ''};session={token}", self.password or "",
                                   encoding=self.auth_encoding)


def basic_authorization(username: str, password: str, *, encoding: str = "latin-1") -> bytes:
    """Return ``b"Basic ..."`` for the decoded credentials.

    ``encoding`` follows Scrapy's ``HTTPPROXY_AUTH_ENCODING`` (latin-1 by default, as
    HttpProxyMiddleware does); characters it cannot represent fall back to UTF-8 (RFC 7617)
    rather than failing every request of the crawl.
    """
    user_pass = f"{username}:{password}"
    try:
        raw = user_pass.encode(encoding)
    except UnicodeEncodeError:
        raw = user_pass.encode("utf-8")
    return b"Basic " + base64.b64encode(raw)


def _shown(url: str) -> str:
    """``url`` for an error message: a password in it is masked (it would land in logs)."""
    head, at, host = url.rpartition("@")
    if not at or ":" not in head.partition("://")[2]:
        return url
    scheme, sep, userinfo = head.rpartition("://")
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def parse_master(url: str, *, auth_encoding: str = "latin-1") -> Master:
    """Split ``SCRAPOXY_MASTER`` into a credential-free proxy URL and an authorization value.

    Credentials in the URL are percent-encoded (``http://a%40b:p%3Aw@host:8888``) so that any
    character, ``@`` and ``:`` included, survives; they are decoded here. Raises ``ValueError``
    for a URL that cannot name a proxy.
    """
    parts = urlsplit(url.strip())
    if parts.scheme == "https":
        # Scrapy would open TLS to the master, which speaks plain HTTP: every request hangs.
        raise ValueError(f"SCRAPOXY_MASTER must be http://, not https://, got {_shown(url)!r}: "
                         "the master speaks plain HTTP (https sites still work through it)")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"SCRAPOXY_MASTER must look like http://[user:pass@]host:port, got {_shown(url)!r}"
        )
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as error:
        raise ValueError(f"SCRAPOXY_MASTER has a bad port: {_shown(url)!r}") from error
    hostport = parts.netloc.rpartition("@")[2]
    authorization = username = password = None
    if parts.username is not None:
        username, password = unquote(parts.username), unquote(parts.password or "")
        authorization = basic_authorization(username, password, encoding=auth_encoding)
    return Master(url=urlunsplit((parts.scheme, hostport, "", "", "")), authorization=authorization,
                  username=username, password=password, auth_encoding=auth_encoding)


def https_by_header(url: str) -> tuple[str, str]:
    """Return ``(download_url, location)`` for an https URL.

    ``download_url`` is the same URL with the ``http`` scheme (what Scrapy downloads through the
    master, absolute-form, no CONNECT); ``location`` is the real URL without its fragment (what
    the master fetches). The port is kept only if the URL names one.
    """
    parts = urlsplit(url)
    location = urlunsplit(("https", parts.netloc, parts.path, parts.query, ""))
    download_url = urlunsplit(("http", parts.netloc, parts.path, parts.query, ""))
    return download_url, location


def _retarget(request: Request, url: str) -> None:
    """Change the URL of ``request`` in place.

    The downloader downloads the very object that went through ``process_request``: a Request
    returned from a middleware would instead be rescheduled as a new request (through the
    scheduler, the dupefilter and every middleware again, with Retry, Redirect and Cookies
    holding the http copy). So the URL is changed in place, which Scrapy's public API does not
    offer. ``urlparse_cached`` memoizes per request object and the download handler chooses
    CONNECT from it, so the memo must be dropped as well.
    """
    request._set_url(url)  # noqa: SLF001 - see docstring
    httpobj._urlparse_cache.pop(request, None)  # noqa: SLF001 - see docstring


class ProxyMiddleware:
    """Send requests through the Scrapoxy master (see the module docstring for the details)."""

    def __init__(self, master: str, *, auth_encoding: str = "latin-1",
                 https_mode: str = "location", sessions: SessionPins | None = None,
                 tunnels: TunnelTokens | None = None) -> None:
        if https_mode not in HTTPS_MODES:
            raise ValueError(f"https_mode must be one of {HTTPS_MODES}, got {https_mode!r}")
        self.master: Master = parse_master(master, auth_encoding=auth_encoding)
        self.https_mode = https_mode
        # Shared with BanMiddleware, which unpins sessions from a banned instance (or, in
        # CONNECT mode, renews the banned tunnel's token).
        self.sessions = SessionPins() if sessions is None else sessions
        self.tunnels = TunnelTokens(lanes=0, lane_ttl_s=0) if tunnels is None else tunnels
        self._warned_auth = False  # the master's 407: said once, not once per page

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        state = crawl_state(crawler)
        if not state.settings.master:
            raise NotConfigured("SCRAPOXY_MASTER is not set")
        if not state.settings.enabled:
            raise NotConfigured("SCRAPOXY_ENABLED is False")
        auth_encoding = crawler.settings.get("HTTPPROXY_AUTH_ENCODING")
        return cls(state.settings.master,
                   auth_encoding="latin-1" if auth_encoding is None else auth_encoding,
                   https_mode=state.settings.https_mode, sessions=state.sessions,
                   tunnels=state.tunnels)

    def process_request(self, request: Request, spider: Any = None) -> None:
        # ``spider`` is optional: Scrapy 2.19 no longer passes it, older versions (>= 2.11) do.
        if request.meta.get("dont_scrapoxy", False):
            return None
        # A copy of a request still rewritten (made by a middleware above this one) must not
        # carry the old rewrite into the new download.
        self._restore(request)
        scheme = urlsplit(request.url).scheme
        if scheme not in ("http", "https"):
            return None

        # A copy (retry, redirect) of a CONNECT-mode request still carries its old token.
        stale_token = request.meta.pop(TOKEN_KEY, None)
        request.meta["proxy"] = self.master.url
        if self.master.authorization is not None:
            request.headers[b"Proxy-Authorization"] = self.master.authorization
        elif stale_token is not None:
            request.headers.pop(b"Proxy-Authorization", None)

        session = request.meta.get(SESSION_KEY)
        if self.https_mode == "connect" and (scheme == "https" or session is not None):
            # A header would go through the tunnel to the target: the session rides in the
            # CONNECT's proxy username instead (Scrapy sends Proxy-Authorization on CONNECT,
            # and pools tunnels per Proxy-Authorization, so one token = its own tunnels).
            # A session's http requests carry the same token, so that the master pins them
            # to the instance of its tunnels: one egress IP per session, http and https.
            token = self.tunnels.assign(request.meta)
            if token is not None:
                request.headers[b"Proxy-Authorization"] = self.master.session_authorization(token)
            return None

        if session is not None:
            proxyname = self.sessions.get(session)
            if proxyname is not None:
                request.headers[PROXYNAME_HEADER] = proxyname
                request.meta[_PINNED] = True

        if scheme == "https":
            download_url, location = https_by_header(request.url)
            request.meta[_REWRITTEN_FROM] = request.url
            request.headers[b"Location"] = location
            _retarget(request, download_url)
        return None

    def process_response(
        self, request: Request, response: Response, spider: Any = None
    ) -> Response:
        original_url = self._restore(request)
        if original_url is not None:
            response = response.replace(url=original_url, request=request)

        proxyname_bytes = response.headers.get(PROXYNAME_HEADER)
        if proxyname_bytes:
            proxyname = proxyname_bytes.decode("latin-1")
            request.meta["scrapoxy_proxyname"] = proxyname
            session = request.meta.get(SESSION_KEY)
            if session is not None:
                self.sessions.pin(session, proxyname)
        else:
            # A redirect copies meta: the previous hop's instance did not serve this one (an
            # https response through a CONNECT tunnel names none).
            request.meta.pop("scrapoxy_proxyname", None)
        if response.status == 407 and response.headers.get(MASTER_ERROR_HEADER) == b"auth" \
                and not self._warned_auth:
            self._warned_auth = True
            logger.error("scrapoxy: the master refused the scraper credentials (407): put them "
                         "in SCRAPOXY_MASTER as http://user:password@host:port, the user and "
                         "password percent-encoded")
        return response

    def process_exception(
        self, request: Request, exception: Exception, spider: Any = None
    ) -> None:
        # Retry (550) builds its new request from this one after us: give it the https request.
        self._restore(request)
        return None

    @staticmethod
    def _restore(request: Request) -> str | None:
        """Undo the https rewrite and the session pin of ``request``; return the original URL.

        Redirect, Retry and BanMiddleware copy the request after this: the copy must not carry
        a pin (a ban retry would go back to the banned instance) nor a stale ``Location``.
        """
        if request.meta.pop(_PINNED, False):
            request.headers.pop(PROXYNAME_HEADER, None)
        original_url: Any = request.meta.pop(_REWRITTEN_FROM, None)
        if original_url is None:
            return None
        _retarget(request, original_url)
        request.headers.pop(b"Location", None)
        return original_url
