"""Settings of the example project: every request goes through the Scrapoxy master.

``SCRAPOXY_MASTER`` comes from the environment variable of the same name, so the same project runs
against a local master or a remote one (``http://user:pass@host:8888``, percent-encoded).
"""
import os

BOT_NAME = "example_project"
SPIDER_MODULES = ["example_project.spiders"]
NEWSPIDER_MODULE = "example_project.spiders"

SCRAPOXY_MASTER = os.environ.get("SCRAPOXY_MASTER", "http://127.0.0.1:8888")

DOWNLOADER_MIDDLEWARES = {
    # After Retry (550), Redirect (600) and Cookies (700), so they only see https URLs; before
    # HttpProxyMiddleware (750), which keeps the master's Proxy-Authorization.
    "scrapoxy_scrapy.ProxyMiddleware": 745,
}

ROBOTSTXT_OBEY = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"

# Rotation happens per request in the master, so a few parallel requests per site already spread
# over the pool; raise these with the number of instances.
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_TIMEOUT = 30

FEED_EXPORT_ENCODING = "utf-8"
