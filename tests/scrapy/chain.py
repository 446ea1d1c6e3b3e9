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
        self.manager = DownloaderMiddlewareManager.from_crawler(crawler)
        self.downloaded: list[Downloaded] = []

    def fetch(self, request: Request,
              answer: Callable[[Request], Response] | Exception) -> Response | Request:
        """Send ``request`` through the chain; ``answer`` plays the downloader."""

        async def download(req: Request) -> Response:
            self.downloaded.append(Downloaded(req))
            if isinstance(answer, Exception):
                raise answer
            return answer(req)

        # An asyncio loop (not the Twisted reactor) is enough: the chain only awaits
        # asyncio.sleep(0) on the exception path, and each test gets a fresh loop.
        return asyncio.run(self.manager.download_async(download, request))
