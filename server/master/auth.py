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
from dataclasses import dataclass

SESSION_MARK = ";session="


@dataclass(frozen=True, slots=True)
class ProxyCredentials:
    username: str
    password: str
    session: str | None


def parse_basic(value: bytes | None) -> ProxyCredentials | None:
    """Decode ``Basic base64(user:password)``; None when absent or malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    session = None
    if SESSION_MARK in username:
        username, _, session = username.partition(SESSION_MARK)
        session = session or None
    return ProxyCredentials(username, password, session)


class ScraperAuth:
    def __init__(self, *, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    def check(self, credentials: ProxyCredentials | None) -> bool:
        if credentials is None:
            return False
        # Both comparisons always run, so timing tells nothing about which part was wrong.
        user_ok = hmac.compare_digest(credentials.username.encode(), self._username)
        password_ok = hmac.compare_digest(credentials.password.encode(), self._password)
        return user_ok & password_ok
