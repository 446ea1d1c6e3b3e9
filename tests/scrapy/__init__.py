"""Tests of the Scrapy side: scrapoxy_scrapy middlewares and the example project."""
