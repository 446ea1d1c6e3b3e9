"""Scrapy side of Scrapoxy for Python: downloader middlewares that route a crawl through the
master, wake and wait for the pool, handle bans, plus a typed client of the commander's API.

Enable in a project's settings::

    SCRAPOXY_MASTER = "http://127.0.0.1:8888"       # may carry percent-encoded user:pass@
    SCRAPOXY_API = "http://127.0.0.1:8889/api"      # optional: scaling, waiting, instance stops
    SCRAPOXY_USERNAME = "admin"                     # the commander's credentials
    SCRAPOXY_PASSWORD = "..."
    DOWNLOADER_MIDDLEWARES = {
        "scrapoxy_scrapy.ScaleMiddleware": 730,
        "scrapoxy_scrapy.BanMiddleware": 740,
        "scrapoxy_scrapy.ProxyMiddleware": 745,
    }
    SPIDER_MIDDLEWARES = {"scrapoxy_scrapy.SessionSpiderMiddleware": 800}  # optional
"""
from scrapoxy_scrapy.bans import BanMiddleware
from scrapoxy_scrapy.commander import CommanderClient
from scrapoxy_scrapy.policy import Ban, BanPolicy
from scrapoxy_scrapy.proxy import DEFAULT_PRIORITY, ProxyMiddleware
from scrapoxy_scrapy.scale import ScaleMiddleware
from scrapoxy_scrapy.sessions import SessionSpiderMiddleware

DOWNLOADER_MIDDLEWARES = {
    "scrapoxy_scrapy.ScaleMiddleware": 730,
    "scrapoxy_scrapy.BanMiddleware": 740,
    "scrapoxy_scrapy.ProxyMiddleware": DEFAULT_PRIORITY,
}

__all__ = [
    "DEFAULT_PRIORITY", "DOWNLOADER_MIDDLEWARES", "Ban", "BanMiddleware", "BanPolicy",
    "CommanderClient", "ProxyMiddleware", "ScaleMiddleware", "SessionSpiderMiddleware",
]
