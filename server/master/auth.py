"""Scraper authentication on the master: HTTP Basic in ``Proxy-Authorization``.

Credentials may hold any character (clients percent-decode them from the proxy URL before
encoding). Comparison is constant-time over both parts. A session token may ride in the
username as ``USER;session=TOKEN`` (or just ``;session=TOKEN`` without auth) to pin a
CONNECT tunnel, since most clients cannot add headers to CONNECT.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field

SESSION_MARK = ";session="


@dataclass(frozen=True, slots=True)
class ProxyCredentials:
    username: bytes
    password: bytes = field(repr=False)
    session: str | None


def parse_basic(value: bytes | None) -> ProxyCredentials | None:
    """Decode ``Basic base64(user:password)``; None when absent or malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except binascii.Error:
        return None
    # Kept as bytes: clients encode non-ASCII credentials as UTF-8 or latin-1.
    username, sep, password = decoded.partition(b":")
    if not sep:
        return None
    session = None
    mark = SESSION_MARK.encode()
    if mark in username:
        username, _, token_bytes = username.partition(mark)
        session = token_bytes.decode("latin-1") or None
    return ProxyCredentials(username, password, session)


class ScraperAuth:
    def __init__(self, *, username: str, password: str) -> None:
        self._usernames = _encodings(username)
        self._passwords = _encodings(password)

    def check(self, credentials: ProxyCredentials | None) -> bool:
        if credentials is None:
            return False
        # Every comparison always runs, so timing tells nothing about which part was wrong.
        user_ok = False
        for expected in self._usernames:
            user_ok |= hmac.compare_digest(credentials.username, expected)
        password_ok = False
        for expected in self._passwords:
            password_ok |= hmac.compare_digest(credentials.password, expected)
        return user_ok & password_ok


def _encodings(text: str) -> tuple[bytes, ...]:
    """UTF-8, and latin-1 when it differs (Scrapy's default for proxy credentials)."""
    utf8 = text.encode("utf-8")
    try:
        latin = text.encode("latin-1")
    except UnicodeEncodeError:
        return (utf8,)
    return (utf8,) if latin == utf8 else (utf8, latin)
