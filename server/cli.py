"""The ``scrapoxy-server`` command: init a config file, start the server, test the pool from
outside. ``main`` is the console script's entry point."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, load_file
from .console import say
from .server_id import resolve_tags

TEMPLATE = '''\
# Scrapoxy configuration (TOML). Every key is optional; the values shown are the defaults.
# Times are in seconds. A string "env:NAME" is read from the environment variable NAME.

# Scaling and config changes made through the API are kept here and applied over this file at
# the next start (they win for the keys they changed; delete the file to let this one decide).
# Unset: NAME.state.json next to this file.
# state_file = "/var/lib/scrapoxy/state.json"

[master]
# The proxy your scraper points at.
host = "127.0.0.1"
port = 8888
# Scraper credentials. Required to bind beyond loopback (or set allow_public = true).
# auth = { username = "scraper", password = "env:SCRAPOXY_MASTER_PASSWORD" }
connect_timeout = 10.0
# Longest silence from an instance or target before a 504.
idle_timeout = 60.0
# How long a request waits for an alive instance while the pool wakes, before a 503.
wait_for_instance = 30.0
# Host patterns, e.g. ["*.example.com"]; deny wins; an empty allow list allows all.
allow = []
deny = []
# HTTPS-by-header mode: verify target certificates (system store plus ca_file).
tls_verify = true
# ca_file = "/path/to/extra-ca.pem"
# One log line per request (logger "scrapoxy.access").
access_log = true
# Master processes sharing the port (this one plus workers): helps only when one master
# process saturates a core and spare cores exist; on 2 cores it costs more than it gains.
processes = 1

[commander]
# REST API and GUI.
host = "127.0.0.1"
port = 8889
username = "admin"
# Unset: a password is generated at each start and printed once.
# password = "env:SCRAPOXY_PASSWORD"
# Seconds of one-second stats samples kept for GET /api/stats and the GUI's charts (10..3600).
stats_window = 900.0

[scaling]
min = 3
required = 3
max = 3
# Seconds without a request before required drops to min.
downscale_delay = 600.0

[manager]
check_interval = 2.0
alive_check_interval = 2.0
# URL fetched through each instance to check it; its body, when an IP, is the fingerprint.
# Unset: the commander's own /ip, which only instances on this machine can reach; required
# with awsec2 or with static proxies on other hosts.
# check_url = "http://checkip.amazonaws.com/"
check_timeout = 5.0
dead_after_failures = 3
dead_after = 30.0
start_timeout = 60.0
drain_grace = 30.0
terminate_on_shutdown = true

[manager.autorestart]
# Each instance lives a random time in [min, max] seconds, then is replaced (0 = forever).
min = 0.0
max = 0.0

# One or more providers. The embedded default: scrapoxy-instance processes on loopback.
[[providers]]
type = "local"
name = "local"
# Each instance egresses from its own 127.0.0.N, N counting up from first_source_octet (a
# replacement takes the next free N: a new address); a site sees distinct client IPs.
# first_source_octet = 2
# The command that starts one instance (unset: this Python's scrapoxy-instance); the manager
# appends --host, --port and --source.
# command = ["scrapoxy-instance"]

# Proxies you already have:
# [[providers]]
# type = "static"
# name = "mine"
# proxies = ["http://user:pass@203.0.113.10:3128"]
# bench = 60.0

# AWS EC2 (credentials from the usual AWS environment or the keys below). Instances in the
# cloud cannot reach this machine's loopback: set [manager] check_url to a URL they can reach
# that answers the caller's IP (e.g. "http://checkip.amazonaws.com/"); the start is refused
# without it.
# [[providers]]
# type = "awsec2"
# name = "awsec2"
# region = "eu-west-1"
# instance_type = "t3.nano"          # ARM types (t4g.nano...) get an arm64 image
# proxy = "tinyproxy"                # or "squid"
# port = 3128
# allowed_cidr = "198.51.100.7/32"   # REQUIRED: your master's public address, the only source
#                                    # the proxy port accepts ("0.0.0.0/0" opens it to everyone)
# tag_key = "scrapoxy"
# spot = false
# create_security_group = false
# image_id, unset: the latest stock Ubuntu LTS image for the instance type's architecture.
# tag_value, unset: "scrapoxy-<server id>", the id generated at the first start and kept in
#   <this file>.server-id, so two servers in one account never touch each other's instances.
'''


DESCRIPTION = "Scrapoxy: one proxy address for your scraper, a pool of rotating proxies behind it."
TEST_DESCRIPTION = """\
Send N requests through the master and print, for each, the egress address that answered;
then each distinct egress address with its count. The master and the URL come from CONFIG, the
file the server was started with (no CONFIG: the embedded default's addresses). Exit status 0
when every request got a 200."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scrapoxy-server", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"scrapoxy-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="write a commented configuration template")
    init.add_argument("path", help="where to write it (an existing file is never overwritten)")
    start = commands.add_parser("start", help="run the server (no PATH: the embedded default)")
    start.add_argument("path", nargs="?",
                       help="config file (TOML, as `init` writes); none: the embedded default")
    start.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                       default=os.environ.get("SCRAPOXY_LOG_LEVEL", "INFO").upper(),
                       help="default: INFO, or $SCRAPOXY_LOG_LEVEL")
    test = commands.add_parser(
        "test", help="send requests through the master and count egress IPs",
        description=TEST_DESCRIPTION, usage="%(prog)s [CONFIG] [URL] [--count N] [--master URL]")
    test.add_argument("config", nargs="?", metavar="CONFIG",
                      help="the server's config file (default: the embedded default)")
    test.add_argument("url", nargs="?", metavar="URL",
                      help="URL answering the caller's IP (default: manager.check_url, else "
                           "the commander's /ip)")
    test.add_argument("--count", type=int, default=10, metavar="N",
                      help="how many requests to send, one after the other (default: 10)")
    test.add_argument("--master", default=None, metavar="URL",
                      help="master URL, http://user:password@host:port with scraper auth "
                           "(default: from CONFIG)")
    args = parser.parse_args(argv)
    if args.command == "init":
        return _init(Path(args.path))
    if args.command == "start":
        if args.log_level not in LOG_LEVELS:  # a default from the environment is not checked
            start.error(f"SCRAPOXY_LOG_LEVEL={args.log_level!r}: must be one of "
                        f"{', '.join(LOG_LEVELS)}")
        return _start(args.path, log_level=args.log_level)
    return _test(config_path=args.config, url=args.url, count=args.count, master=args.master)


def _test(*, config_path: str | None, url: str | None, count: int, master: str | None) -> int:
    from .selftest import run_test, targets_from_config

    if config_path is not None and url is None and "://" in config_path:
        config_path, url = None, config_path  # ``test URL``: no config, the URL alone
    try:
        config = _load(config_path)
        targets = targets_from_config(config, master=master, url=url)
    except (ConfigError, ValueError) as exc:
        print(f"scrapoxy-server test: {exc}", file=sys.stderr)
        return 2
    return run_test(targets=targets, count=count)


def _init(path: Path) -> int:
    if path.exists():
        print(f"scrapoxy-server: {path} exists; not overwriting it", file=sys.stderr)
        return 1
    try:
        path.write_text(TEMPLATE, encoding="utf-8")
    except OSError as exc:
        print(f"scrapoxy-server: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {path}; edit it, then run: scrapoxy-server start {path}")
    return 0


def _load(path: str | None) -> Config:
    if path is None:
        return Config()
    return load_file(path)


def _start(path: str | None, *, log_level: str) -> int:
    try:
        config = resolve_tags(_load(path), config_path=path)
    except ConfigError as exc:
        print(f"scrapoxy-server: bad configuration: {exc}", file=sys.stderr)
        return 2
    _setup_logging(log_level)
    from .reactor import install

    install()
    from twisted.internet import reactor

    from .root import ListenError, Server

    try:
        # Applies the state file (changes made through the API) over the file's config.
        server = Server(config=config, reactor=reactor, config_path=path)
    except ConfigError as exc:
        print(f"scrapoxy-server: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        listening = server.start()
    except ListenError as exc:
        print(f"scrapoxy-server: {exc}", file=sys.stderr)
        return 1
    source = path if path else "embedded default (local provider)"
    scaling = server.config.scaling
    say(f"scrapoxy-server {__version__} ({source})")
    say(f"  master:    {listening.master}   <- point your scraper here")
    say(f"  commander: {listening.commander}   (API at /api, GUI at /)")
    if listening.generated_password is not None:
        say(f"  commander login: {listening.commander_user} / {listening.generated_password}"
            "   (generated for this run; set commander.password to fix it)")
    else:
        say(f"  commander login: {listening.commander_user} / (the configured password)")
    providers = ", ".join(f"{p.name} ({p.type})" for p in server.config.providers)
    say(f"  providers: {providers}; scaling min {scaling.min} / required {scaling.required}"
        f" / max {scaling.max}")
    # The reactor stops on SIGINT and SIGTERM; the trigger then shuts instances down.
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run()
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)


if __name__ == "__main__":
    sys.exit(main())
