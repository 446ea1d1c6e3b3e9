"""Example Scrapy project: crawl one site through the Scrapoxy master.

Importing the package (Scrapy does, to load ``example_project.settings``) makes ``tldextract``
use its bundled public suffix snapshot: Scrapy's cookie middleware builds a ``TLDExtract`` when it
is imported, and by default that fetches the list from the internet on first use, which hangs a
crawl on a closed network until timeouts. An empty ``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` disables
the fetch (tldextract reads it when an extractor is built; 5.4 is tested here); set it to a URL or a
local file to use a fresher list.
"""
import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
