"""Run Scrapy's real downloader-middleware chain around a fake download function.

The chain is built from a crawler's settings exactly as Scrapy builds it, so the tests pin how
ProxyMiddleware cooperates with Retry, Redirect, Cookies and HttpProxy, without sockets.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from scrapy import Request, Spider
from scrapy.core.downloader.middleware import DownloaderMiddlewareManager
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.internet import defer
from twisted.python.failure import Failure

from scrapoxy_scrapy import DEFAULT_PRIORITY

MASTER = "http://127.0.0.1:8888"


class Downloaded:
    """What the download function received: a snapshot, since the request is restored after."""

    def __init__(self, request: Request) -> None:
        self.url = request.url
        self.headers = {k.decode().lower(): [v.decode("latin-1") for v in vs]
                        for k, vs in request.headers.items()}
        self.meta = dict(request.meta)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


class Chain:
    """The downloader middlewares of one crawler, driven synchronously."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        crawler = get_crawler(Spider, {
            "SCRAPOXY_MASTER": MASTER,
            "DOWNLOADER_MIDDLEWARES": {"scrapoxy_scrapy.ProxyMiddleware": DEFAULT_PRIORITY},
            **(settings or {}),
        })
        crawler.spider = crawler._create_spider("test")
        self.crawler = crawler
        self.spider = crawler.spider
        self.manager = DownloaderMiddlewareManager.from_crawler(crawler)
        for middleware in self.manager.middlewares:
            # Before 2.14 OffsiteMiddleware learns the allowed hosts only on spider_opened,
            # which no engine sends here.
            if type(middleware).__name__ == "OffsiteMiddleware" and \
                    not hasattr(middleware, "host_regex"):
                middleware.spider_opened(self.spider)
        self.downloaded: list[Downloaded] = []

    def fetch(self, request: Request,
              answer: Callable[[Request], Response] | Exception) -> Response | Request:
        """Send ``request`` through the chain; ``answer`` plays the downloader."""

        def download_now(req: Request) -> Response:
            self.downloaded.append(Downloaded(req))
            if isinstance(answer, Exception):
                raise answer
            return answer(req)

        async def download(req: Request) -> Response:
            return download_now(req)

        if not hasattr(self.manager, "download_async"):
            return self._fetch_with_deferreds(request, download_now)
        # An asyncio loop (not the Twisted reactor) is enough: the chain only awaits
        # asyncio.sleep(0) on the exception path, and each test gets a fresh loop.
        return asyncio.run(self.manager.download_async(download, request))

    def _fetch_with_deferreds(self, request: Request,
                              download_now: Callable[[Request], Response]) -> Response | Request:
        """Scrapy before 2.14 (no ``download_async``): the Deferred chain, which fires at once
        here because nothing in it waits for the reactor."""
        results: list[Any] = []
        self.manager.download(lambda req, spider: defer.maybeDeferred(download_now, req),
                              request, self.spider).addBoth(results.append)
        if not results:
            raise AssertionError("the middleware chain waited for the reactor")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]
