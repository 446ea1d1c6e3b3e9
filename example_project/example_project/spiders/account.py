"""``account``: one session per account, each pinned to one instance, with bans handled.

    scrapy crawl account -a url=https://shop.example/ -a accounts=3 -a pages=5 -O out.json

Each account logs in (a stand-in: the start page) and reads ``pages`` pages; every request of
an account carries ``meta["scrapoxy_session"] = ("account", N)``, set once on the first request
and carried to the follow-ups by ``SessionSpiderMiddleware``. The site sees each account from
one IP, as a real user would appear. When an instance is banned, BanMiddleware stops it, the
session is unpinned and the request retried; the session then sticks to the new instance.
Items: ``{account, url, status, proxyname}``.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Request, Response


class AccountSpider(scrapy.Spider):
    name = "account"

    def __init__(self, url: str | None = None, accounts: str | int = 2, pages: str | int = 3,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not url:
            raise ValueError("the account spider needs a start URL: -a url=https://...")
        self.start_url = url.rstrip("/") + "/"
        self.accounts = int(accounts)
        self.pages = int(pages)

    async def start(self) -> AsyncIterator[Request]:
        for account in range(1, self.accounts + 1):
            yield Request(self.start_url, callback=self.logged_in, dont_filter=True,
                          meta={"scrapoxy_session": ("account", account), "account": account})

    def logged_in(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        yield self._item(response)
        for page in range(1, self.pages + 1):
            # No session here: SessionSpiderMiddleware copies it from the response.
            yield response.follow(f"p{page}", callback=self.page, dont_filter=True,
                                  meta={"account": response.meta["account"]})

    def page(self, response: Response) -> Iterator[dict[str, Any]]:
        yield self._item(response)

    @staticmethod
    def _item(response: Response) -> dict[str, Any]:
        return {"account": response.meta["account"], "url": response.url,
                "status": response.status, "proxyname": response.meta.get("scrapoxy_proxyname")}
