"""The real-crawl tests use the lab (``server_factory``, ``lab_cert``)."""
from tests.lab.fixtures import *  # noqa: F401,F403
