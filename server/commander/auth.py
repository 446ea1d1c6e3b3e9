"""Commander authentication: HTTP Basic, plus the bare header of the original Scrapoxy.

Two forms of ``Authorization`` are accepted:

* ``Basic base64(username:password)``, what browsers, curl and ``requests`` send;
* ``base64(password)`` with no scheme, what clients of the original (Node.js) Scrapoxy send.

Secrets are compared with ``hmac.compare_digest`` on bytes, and the username and the password
are both always compared, so the answer time does not tell which one was wrong.
"""
from __future__ import annotations

import binascii
import hmac
from base64 import b64decode

# A real header is a few dozen bytes; refusing huge ones early keeps decoding cheap.
MAX_HEADER_LENGTH = 4096


def _decode(token: str) -> bytes | None:
    try:
        return b64decode(token.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _same(supplied: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(supplied, expected)


def is_authorized(header: str | None, *, username: str, password: str) -> bool:
    """True when ``header`` (the raw ``Authorization`` value) carries the right secret."""
    if not header or len(header) > MAX_HEADER_LENGTH:
        return False
    expected_user = username.encode("utf-8")
    expected_password = password.encode("utf-8")
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "basic":
        decoded = _decode(rest)
        if decoded is None or b":" not in decoded:
            return False
        user, _, supplied = decoded.partition(b":")
        # Both comparisons run whatever the first one says: no early exit to time.
        user_ok = _same(user, expected_user)
        password_ok = _same(supplied, expected_password)
        return user_ok & password_ok
    if rest:
        # Some other scheme (Bearer, Digest...): not ours.
        return False
    decoded = _decode(scheme)
    if decoded is None:
        return False
    return _same(decoded, expected_password)
