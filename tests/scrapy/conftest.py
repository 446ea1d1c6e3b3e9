"""The Scrapy tests run with Twisted's default reactor installed, whatever ran before them.

``scrapy.utils.test.get_crawler`` picks its settings from the installed reactor: Scrapy 2.13
refuses to run without one, 2.19 switches to its reactorless mode. Installing it here keeps the
tests the same on the oldest and the newest supported Scrapy (CI runs both, see ``.ci/run``),
and in a full run where other tests already installed it.
"""
from twisted.internet import reactor  # noqa: F401 - installs the default reactor
