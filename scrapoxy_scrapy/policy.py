"""Ban detection: is this response (or exception) the target refusing the instance's IP?

:class:`BanPolicy` is the default, configured by settings; replace it with your own class by
dotted path in ``SCRAPOXY_BAN_POLICY`` (anything with the same two methods; built with
``from_crawler`` when it has one). A decision is a :class:`Ban` naming its reason, which becomes
the stats key ``scrapoxy/ban/reason_count/<reason>``.

Errors the master itself produces (``x-scrapoxy-error``, e.g. the 503 ``no_instance``) are never
bans: the target did not answer them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scrapy.http import Request, Response, TextResponse
from scrapy.utils.misc import load_object

MASTER_ERROR_HEADER = b"x-scrapoxy-error"
DEFAULT_BAN_HTTP_CODES = (429, 503)


@dataclass(frozen=True)
class Ban:
    """Why a response or an exception was judged a ban; ``reason`` is a short stats-safe name."""

    reason: str


def compile_patterns(patterns: Iterable[str] | Mapping[str, str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """``[regex, ...]`` (named by themselves) or ``{name: regex}`` -> ``((name, compiled), ...)``."""
    items = patterns.items() if isinstance(patterns, Mapping) else ((p, p) for p in patterns)
    return tuple((str(name), re.compile(pattern)) for name, pattern in items)


class BanPolicy:
    """Bans by status code (default 429 and 503), by body pattern, and by exception class."""

    def __init__(self, *, http_codes: Iterable[int] = DEFAULT_BAN_HTTP_CODES,
                 body_patterns: Iterable[str] | Mapping[str, str] = (),
                 exceptions: Iterable[type[BaseException] | str] = ()) -> None:
        self.http_codes = frozenset(int(code) for code in http_codes)
        self.body_patterns = compile_patterns(body_patterns)
        self.exceptions = tuple(load_object(e) if isinstance(e, str) else e for e in exceptions)

    @classmethod
    def from_crawler(cls, crawler: Any) -> BanPolicy:
        settings = crawler.settings
        codes = settings.getlist("SCRAPOXY_BAN_HTTP_CODES", list(DEFAULT_BAN_HTTP_CODES))
        patterns = settings.get("SCRAPOXY_BAN_BODY_PATTERNS") or ()
        if isinstance(patterns, str):
            patterns = [patterns]
        return cls(http_codes=[int(code) for code in codes], body_patterns=patterns,
                   exceptions=settings.getlist("SCRAPOXY_BAN_EXCEPTIONS", []))

    def response_ban(self, request: Request, response: Response) -> Ban | None:
        if response.headers.get(MASTER_ERROR_HEADER):
            return None
        if response.status in self.http_codes:
            return Ban(f"http_{response.status}")
        if self.body_patterns and isinstance(response, TextResponse):
            text = response.text
            for name, pattern in self.body_patterns:
                if pattern.search(text):
                    return Ban(f"body/{name}")
        return None

    def exception_ban(self, request: Request, exception: BaseException) -> Ban | None:
        if self.exceptions and isinstance(exception, self.exceptions):
            return Ban(f"exception/{type(exception).__name__}")
        return None


def load_ban_policy(path_or_class: str | type, crawler: Any) -> Any:
    """Build the policy named by ``SCRAPOXY_BAN_POLICY`` (a dotted path or a class)."""
    if isinstance(path_or_class, str):
        try:
            policy_class = load_object(path_or_class)
        except (ImportError, NameError, ValueError) as error:
            raise ValueError(f"SCRAPOXY_BAN_POLICY = {path_or_class!r} names no class that can be "
                             f"imported ({error}); give a dotted path such as "
                             "'myproject.bans.MyPolicy'") from None
    else:
        policy_class = path_or_class
    if not callable(policy_class):  # a module named instead of the class in it
        raise ValueError(f"SCRAPOXY_BAN_POLICY = {path_or_class!r} is not a class "
                         f"({type(policy_class).__name__}); name the policy class in it")
    if hasattr(policy_class, "from_crawler"):
        return policy_class.from_crawler(crawler)
    return policy_class()
