"""Scrapy side of Scrapoxy for Python: downloader middlewares that route a crawl through the master.

Enable in a project's settings::

    SCRAPOXY_MASTER = "http://127.0.0.1:8888"   # may carry percent-encoded user:pass@
    DOWNLOADER_MIDDLEWARES = {"scrapoxy_scrapy.ProxyMiddleware": 745}
"""
from scrapoxy_scrapy.proxy import DEFAULT_PRIORITY, ProxyMiddleware

__all__ = ["DEFAULT_PRIORITY", "ProxyMiddleware"]
