"""The test lab: an echo ORIGIN (HTTP, HTTPS, IPv6), a test CA, stock proxies as instances, and a
``scrapoxy-server`` subprocess runner. Loopback only; see ``tests/lab/README.md``."""
