"""End-to-end tests run the real ``scrapoxy-server`` against the lab (``tests/lab``)."""
from tests.lab.fixtures import *  # noqa: F401,F403
