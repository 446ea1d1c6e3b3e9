"""Cloud-init user data that turns a stock Ubuntu VM into a proxy instance.

No custom AMI is needed: the script installs the distribution's tinyproxy or squid, writes a
config that listens on ``port``, requires Basic auth with the instance credentials, and accepts
clients only from ``allowed_cidr`` (the master's public address). Both configs keep the proxy
anonymous (no ``Via``/``X-Forwarded-For``) and allow CONNECT to any port, since the master
tunnels HTTPS to arbitrary targets.

The script necessarily contains the password; it never echoes it (no ``set -x``), and callers
must never log the script.
"""
from __future__ import annotations

import ipaddress
import re

PROXIES = ("tinyproxy", "squid")

# Credentials end up in proxy config files and in a single-quoted shell word; restricting the
# alphabet keeps both free of quoting problems (no spaces, quotes, ':' or '$').
# (No ':' either: the proxies read Basic credentials as user:password, RFC 7617.)
_SAFE_SECRET = re.compile(r"[A-Za-z0-9._~+=-]{1,128}")
SAFE_SECRET_RULE = "1..128 characters of A-Z a-z 0-9 . _ ~ + = -"


def is_safe_secret(value: str) -> bool:
    return isinstance(value, str) and _SAFE_SECRET.fullmatch(value) is not None


def check_credentials(*, username: str, password: str) -> None:
    """Raise ``ValueError`` when a credential cannot be written safely into the proxy config."""
    if not is_safe_secret(username):
        raise ValueError(f"instance_username must be {SAFE_SECRET_RULE}")
    if not is_safe_secret(password):
        # The message must not echo the password.
        raise ValueError(f"instance_password must be {SAFE_SECRET_RULE}")


def build_user_data(*, proxy: str, port: int, username: str, password: str,
                    allowed_cidr: str) -> str:
    """The cloud-init shell script for ``proxy`` ("tinyproxy" or "squid")."""
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    check_credentials(username=username, password=password)
    # Normalises the CIDR and refuses anything that is not one (it is written into configs).
    cidr = str(ipaddress.ip_network(allowed_cidr, strict=False))
    if proxy == "tinyproxy":
        body = _tinyproxy(port=port, username=username, password=password, cidr=cidr)
    else:
        body = _squid(port=port, username=username, password=password, cidr=cidr)
    return _HEADER + body


_HEADER = """#!/bin/bash
# Scrapoxy instance: a stock forward proxy with Basic auth, reachable only from the master.
set -eu
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5; do
  apt-get update -q && break
  sleep 10
done
"""


def _tinyproxy(*, port: int, username: str, password: str, cidr: str) -> str:
    # No Listen/Bind lines: tinyproxy then listens on all addresses and can reach IPv6 targets.
    # No ConnectPort lines: CONNECT to any port is allowed.
    return f"""apt-get install -y -q tinyproxy
cat > /etc/tinyproxy/tinyproxy.conf <<'SCRAPOXY_EOF'
User tinyproxy
Group tinyproxy
Port {port}
Timeout 600
MaxClients 200
PidFile "/run/tinyproxy/tinyproxy.pid"
LogFile "/var/log/tinyproxy/tinyproxy.log"
LogLevel Warning
DisableViaHeader Yes
Allow {cidr}
BasicAuth {username} {password}
SCRAPOXY_EOF
chmod 640 /etc/tinyproxy/tinyproxy.conf
chgrp tinyproxy /etc/tinyproxy/tinyproxy.conf
systemctl enable tinyproxy
systemctl restart tinyproxy
"""


def _squid(*, port: int, username: str, password: str, cidr: str) -> str:
    # The whole squid.conf is replaced, so Debian's default "deny CONNECT to non-SSL ports"
    # and Safe_ports rules are gone on purpose. The password file holds an APR1 hash, never
    # the clear password.
    return f"""apt-get install -y -q squid openssl
printf '%s:%s\\n' '{username}' "$(openssl passwd -apr1 '{password}')" > /etc/squid/passwords
chown root:proxy /etc/squid/passwords
chmod 640 /etc/squid/passwords
cat > /etc/squid/squid.conf <<'SCRAPOXY_EOF'
http_port {port}
auth_param basic program /usr/lib/squid/basic_ncsa_auth /etc/squid/passwords
auth_param basic realm scrapoxy
acl master src {cidr}
acl authenticated proxy_auth REQUIRED
http_access deny !master
http_access allow authenticated
http_access deny all
cache deny all
forwarded_for delete
via off
reply_header_access X-Cache deny all
reply_header_access X-Cache-Lookup deny all
access_log none
SCRAPOXY_EOF
systemctl enable squid
systemctl restart squid
"""
