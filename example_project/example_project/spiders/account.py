"""``account``: one session per account, each pinned to one instance, with bans handled.

    scrapy crawl account -a url=https://shop.example/ -a accounts=3 -a pages=5 -O out.json

Each account logs in (a stand-in: the start page) and reads ``pages`` pages; every request of
an account carries ``meta["scrapoxy_session"] = ("account", N)``, set once on the first request
and carried to the follow-ups by ``SessionSpiderMiddleware``. The site sees each account from
one IP, as a real user would appear, until a ban moves it: BanMiddleware stops the banned
instance, the session is unpinned and the request retried; the session then sticks to the new
instance. Sessions pick instances, they do not reserve them: two accounts may share one.
Items: ``{account, url, status, proxyname}``; a page that still fails (a ban beyond
``SCRAPOXY_BAN_RETRY_TIMES``, an error the master made itself) is reported too, with ``error``
(the ``x-scrapoxy-error`` code, or the exception) and ``message``.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Request, Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from example_project.answers import answer_item


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
            yield Request(self.start_url, callback=self.logged_in, errback=self.failed,
                          dont_filter=True,
                          meta={"scrapoxy_session": ("account", account), "account": account})

    def logged_in(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        yield self._item(response)
        for page in range(1, self.pages + 1):
            # No session here: SessionSpiderMiddleware copies it from the response.
            yield response.follow(f"p{page}", callback=self.page, errback=self.failed,
                                  dont_filter=True, meta={"account": response.meta["account"]})

    def page(self, response: Response) -> Iterator[dict[str, Any]]:
        yield self._item(response)

    def failed(self, failure: Failure) -> Iterator[dict[str, Any]]:
        if failure.check(HttpError):
            yield self._item(failure.value.response)
            return
        request = failure.request  # type: ignore[attr-defined]
        yield {"account": request.meta.get("account"), "url": request.url, "status": None,
               "proxyname": None, "error": repr(failure.value)}

    def _item(self, response: Response) -> dict[str, Any]:
        return {"account": response.meta["account"],
                **answer_item(response, logger=self.logger)}
