"""Settings of the example project: every request goes through the Scrapoxy master.

``SCRAPOXY_*`` come from environment variables of the same names, so the same project runs
against a local server or a remote one (``http://user:pass@host:8888``, percent-encoded).
Without ``SCRAPOXY_API`` the crawl still goes through the master, but the pool is not woken,
waited for, or told about bans.
"""
import os

BOT_NAME = "example_project"
SPIDER_MODULES = ["example_project.spiders"]
NEWSPIDER_MODULE = "example_project.spiders"

SCRAPOXY_MASTER = os.environ.get("SCRAPOXY_MASTER", "http://127.0.0.1:8888")
SCRAPOXY_API = os.environ.get("SCRAPOXY_API")  # e.g. http://127.0.0.1:8889/api
SCRAPOXY_USERNAME = os.environ.get("SCRAPOXY_USERNAME", "admin")
SCRAPOXY_PASSWORD = os.environ.get("SCRAPOXY_PASSWORD")
# "location" (default): the master sees https requests and can pin them to an instance.
# "connect": TLS end to end through a CONNECT tunnel; sessions ride in the proxy username.
SCRAPOXY_HTTPS_MODE = os.environ.get("SCRAPOXY_HTTPS_MODE", "location")

# Bans: 429 and 503 by default (never the master's own 503 no_instance); add page patterns.
SCRAPOXY_BAN_HTTP_CODES = [429, 503]
SCRAPOXY_BAN_BODY_PATTERNS = {"captcha": r"(?i)are you a robot|captcha"}
SCRAPOXY_BAN_RETRY_TIMES = 5
# SCRAPOXY_BAN_POLICY = "myproject.bans.MyPolicy"   # your own policy class

DOWNLOADER_MIDDLEWARES = {
    # Waits (without blocking) while the pool has no alive instance; retries no_instance.
    "scrapoxy_scrapy.ScaleMiddleware": 730,
    # Bans: stops the instance, retries elsewhere; before Retry (550) so RETRY_TIMES is kept.
    "scrapoxy_scrapy.BanMiddleware": 740,
    # After Retry (550), Redirect (600) and Cookies (700), so they only see https URLs; before
    # HttpProxyMiddleware (750), which keeps the master's Proxy-Authorization.
    "scrapoxy_scrapy.ProxyMiddleware": 745,
}
# Follow-up requests keep the session (the instance) of the page they were found on.
SPIDER_MIDDLEWARES = {"scrapoxy_scrapy.SessionSpiderMiddleware": 800}

ROBOTSTXT_OBEY = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"

# Rotation happens per request in the master, so a few parallel requests per site already spread
# over the pool; raise these with the number of instances.
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_TIMEOUT = 30

FEED_EXPORT_ENCODING = "utf-8"
