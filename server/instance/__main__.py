"""``python -m scrapoxy_server.instance``: same as the ``scrapoxy-instance`` console script."""
from scrapoxy_server.instance.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
