"""``site``: crawl one site through Scrapoxy and report, per page, which instance served it.

    scrapy crawl site -a url=https://example.com/ [-a max_pages=20] [-a sticky=1] -O pages.json

Follows links of HTML pages that stay on the start URL's origin (scheme, host and port) until
``max_pages`` pages were requested. Each item is ``{url, status, title, proxyname}``;
``proxyname`` is the ``x-cache-proxyname`` the master answered, so the output shows the rotation
(or, with ``sticky=1``, that one session stays on one instance). Every answer makes an item,
non-HTML ones and errors included: an error the master made itself (``x-scrapoxy-error``, e.g. a
502 ``upstream`` for a site whose certificate is not trusted) adds ``error`` (the code) and
``message``; a request that got no answer at all has ``status: None`` and ``error``.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urldefrag, urlsplit

import scrapy
from scrapy.http import Request, Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from example_project.answers import answer_item, is_html

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and effective port: two URLs on one site share it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, url: str | None = None, max_pages: str | int = 20,
                 sticky: str | bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not url:
            raise ValueError("the site spider needs a start URL: -a url=https://...")
        self.start_url = url
        self.max_pages = int(max_pages)
        # -a always passes strings; "0" must mean off.
        self.sticky = str(sticky).strip().lower() in ("1", "true", "yes", "on")
        self.origin = origin(url)
        self.requested: set[str] = set()

    async def start(self) -> AsyncIterator[Request]:
        # Scrapy >= 2.13 calls start(); start_requests() remains for older versions.
        for request in self.start_requests():
            yield request

    def start_requests(self) -> Iterator[Request]:
        request = self._request(self.start_url)
        if request is not None:
            yield request

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        yield self._item(response)
        if not is_html(response):
            return
        for href in response.css("a::attr(href)").getall():
            url = urldefrag(response.urljoin(href.strip()))[0]
            if origin(url) != self.origin:
                continue
            request = self._request(url)
            if request is not None:
                yield request

    def failed(self, failure: Failure) -> Iterator[dict[str, Any]]:
        # Non-2xx pages are still worth a line in the report (a ban, a master error...).
        if failure.check(HttpError):
            yield self._item(failure.value.response)
            return
        request = failure.request  # type: ignore[attr-defined]
        yield {"url": request.url, "status": None, "title": None, "proxyname": None,
               "error": repr(failure.value)}

    def _request(self, url: str) -> Request | None:
        if url in self.requested or len(self.requested) >= self.max_pages:
            return None
        self.requested.add(url)
        meta = {"scrapoxy_session": "site"} if self.sticky else {}
        return Request(url, callback=self.parse, errback=self.failed, meta=meta)

    def _item(self, response: Response) -> dict[str, Any]:
        title = None
        if is_html(response):
            title = (response.css("title::text").get() or "").strip()
        return {**answer_item(response, logger=self.logger), "title": title}
