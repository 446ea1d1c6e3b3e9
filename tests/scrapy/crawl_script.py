"""Run one crawl in a fresh process (a reactor cannot restart): ``python crawl_script.py
JOB.json``. The job names start URLs and settings; the script writes ``{items, stats}`` to the
job's ``out`` path. Items: ``{url, status, text, proxyname, redirect_urls}``.
"""
from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.spidermiddlewares.httperror import HttpError


class ProbeSpider(scrapy.Spider):
    name = "probe"

    def __init__(self, start: list[str], follow: bool = False, session: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_list = start
        self.follow = follow
        self.session = session

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for url in self.start_list:
            meta = {} if self.session is None else {"scrapoxy_session": self.session}
            yield scrapy.Request(url, meta=meta, callback=self.parse, errback=self.failed)

    def parse(self, response):
        yield self.item(response)
        if self.follow:
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, callback=self.parse, errback=self.failed)

    def failed(self, failure):
        if failure.check(HttpError):
            yield self.item(failure.value.response)
        else:
            yield {"url": failure.request.url, "status": None, "error": repr(failure.value)}

    @staticmethod
    def item(response) -> dict[str, Any]:
        name = response.headers.get("x-cache-proxyname")
        return {"url": response.url, "status": response.status, "text": response.text[:500],
                "proxyname": name.decode() if name else None,
                "redirect_urls": response.meta.get("redirect_urls", [])}


def main(job_path: str) -> None:
    with open(job_path) as file:
        job = json.load(file)
    settings = {
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "ROBOTSTXT_OBEY": False,
        "DOWNLOAD_TIMEOUT": 20,
        "DOWNLOADER_MIDDLEWARES": {"scrapoxy_scrapy.ScaleMiddleware": 730,
                                   "scrapoxy_scrapy.BanMiddleware": 740,
                                   "scrapoxy_scrapy.ProxyMiddleware": 745},
        "SPIDER_MIDDLEWARES": {"scrapoxy_scrapy.SessionSpiderMiddleware": 800},
        **job.get("settings", {}),
    }
    process = CrawlerProcess(settings)
    items: list[dict[str, Any]] = []
    crawler = process.create_crawler(ProbeSpider)

    def collect(item: dict[str, Any]) -> None:  # a named local: signals hold weak references
        items.append(dict(item))

    crawler.signals.connect(collect, signal=scrapy.signals.item_scraped)
    process.crawl(crawler, **job.get("spider", {}))
    process.start()
    with open(job["out"], "w") as file:
        json.dump({"items": items, "stats": crawler.stats.get_stats()}, file, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
