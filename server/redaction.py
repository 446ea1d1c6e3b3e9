"""Keeping secrets out of what the server shows: API answers, events, errors and logs.

Secrets live in two shapes in the config: values under a secret key (``password``,
``secret_access_key``...), and passwords inside URLs (``http://bob:s3cret@host:3128`` in a
static provider's list). Both are replaced by the redaction mark ``***``; a URL keeps its
user name, so an operator can still tell the accounts apart.
"""
from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
SECRET_KEYS = frozenset({"password", "instance_password", "secret_access_key", "access_key_id"})
# Keys whose whole value is secret-bearing (``master.auth`` holds a password).
SECRET_BEARING_KEYS = SECRET_KEYS | {"auth"}

# scheme://user:password@ ; the password runs up to the last "@" before the host, and may
# hold anything but "/" (a literal "@" in a password must be percent-encoded, but a sloppy
# one is still hidden up to the last "@").
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s'\"]*:)[^/\s'\"]*@")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***`` (user name kept)."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with the password replaced."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED + "@", text)


def has_redacted_password(url: str) -> bool:
    """True when ``url`` carries the redaction mark as its password (it was read back from
    an API answer and sent again)."""
    return isinstance(url, str) and redact_text(url) == url and f":{REDACTED}@" in url


def is_secret_path(path: str) -> bool:
    """True when the dotted key path (``master.auth.password``, ``providers[0].secret_access_key``)
    names a secret or a value holding one."""
    for part in path.split("."):
        if part.split("[", 1)[0] in SECRET_BEARING_KEYS:
            return True
    return False


def redact_value(value: Any) -> Any:
    """Plain data (dicts, lists, strings) with URL passwords redacted and every value under
    a secret key replaced by ``***`` (``None`` stays ``None``: "not set" is not a secret)."""
    if isinstance(value, dict):
        return {key: (REDACTED if key in SECRET_KEYS and item is not None else redact_value(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
