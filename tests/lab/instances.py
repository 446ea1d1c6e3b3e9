"""Stock forward proxies (Debian tinyproxy and squid) as lab instances.

Each runs as a subprocess on a free loopback port and egresses from a given source address
(``127.0.0.N``), so ORIGIN can tell the instances apart by client address, as a target tells
cloud VMs apart by IP. They are what real instances run, so interoperability tests run the
master against them unmodified. Quirks worth knowing are in ``/work/shared/TRAPS.md``:

- tinyproxy needs ``Bind ::1`` next to its IPv4 ``Bind`` to reach IPv6 targets; it relays
  ``Proxy-Authorization`` and unknown headers, and closes client connections after each response.
- squid runs as user ``proxy`` (its folder must be readable by that user), adds
  ``X-Forwarded-For``/``Via``/``X-Cache`` unless told not to, refuses CONNECT beyond 443 by
  default, and needs ``dns_nameservers`` on a closed network.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port, wait_until

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
SQUID = shutil.which("squid") or "/usr/sbin/squid"
SQUID_HELPERS = "/usr/lib/squid"


class ProxyStartError(RuntimeError):
    """A stock proxy did not start; the message carries its output."""


@dataclass
class StockProxy:
    """A running stock proxy: ``url`` is what a master (or ``requests``) uses as proxy."""

    kind: str
    host: str
    port: int
    source: str
    workdir: Path
    process: subprocess.Popen
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        """The proxy URL with its credentials, as the ``static`` provider takes them."""
        if self.username is None:
            return self.url
        return f"http://{self.username}:{self.password}@{self.host}:{self.port}"

    def proxies(self) -> dict[str, str]:
        """``proxies=`` for ``requests``."""
        return {"http": self.auth_url, "https": self.auth_url}

    def output(self) -> str:
        """Everything the proxy wrote (stdout, stderr and its log files), for failure reports."""
        texts = []
        for path in sorted(self.workdir.glob("*.log")):
            try:
                texts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
            except OSError:
                pass
        return "\n".join(texts)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_tinyproxy(*, source: str, host: str = "127.0.0.1", username: str | None = None,
                    password: str | None = None, timeout: float = 10.0) -> StockProxy:
    """Run tinyproxy on a free port of ``host``, egressing from ``source`` (and ``::1``)."""
    if not os.path.exists(TINYPROXY):
        raise ProxyStartError("tinyproxy is not installed")
    user = "tinyproxy" if _user_exists("tinyproxy") else "nobody"
    workdir = _workdir("tinyproxy", user=user)
    port = free_port(host)
    lines = [
        f"Port {port}",
        f"Listen {host}",
        f"Bind {source}",
        # Without this an IPv4-bound tinyproxy answers 500 to IPv6 targets.
        "Bind ::1",
        "Timeout 60",
        "MaxClients 200",
        "LogLevel Info",
        f"LogFile \"{workdir / 'tinyproxy.log'}\"",
        f"PidFile \"{workdir / 'tinyproxy.pid'}\"",
        "DisableViaHeader Yes",
        # Loopback clients only; no ConnectPort line, so CONNECT may reach any port.
        "Allow 127.0.0.0/8",
        "Allow ::1",
    ]
    if os.geteuid() == 0:
        # As root, tinyproxy drops privileges; the work folder belongs to that user.
        lines += [f"User {user}", f"Group {_group_of(user)}"]
    if username is not None:
        lines.append(f"BasicAuth {username} {password}")
    config = workdir / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    return _launch(
        kind="tinyproxy", command=[TINYPROXY, "-d", "-c", str(config)], host=host, port=port,
        source=source, workdir=workdir, username=username, password=password, timeout=timeout,
    )


def start_squid(*, source: str, host: str = "127.0.0.1", username: str | None = None,
                password: str | None = None, timeout: float = 20.0) -> StockProxy:
    """Run squid on a free port of ``host``, egressing from ``source``, with no cache; with
    ``username``/``password``, only clients with those Basic credentials are served."""
    if not os.path.exists(SQUID):
        raise ProxyStartError("squid is not installed")
    workdir = _workdir("squid", user="proxy")
    port = free_port(host)
    if username is not None:
        hashed = subprocess.run(["openssl", "passwd", "-1", password], capture_output=True,
                                text=True, check=True).stdout.strip()
        passwd = workdir / "passwd"
        passwd.write_text(f"{username}:{hashed}\n")
        passwd.chmod(0o644)
        access = [f"auth_param basic program {SQUID_HELPERS}/basic_ncsa_auth {passwd}",
                  "auth_param basic realm lab", "acl authed proxy_auth REQUIRED",
                  "http_access allow authed", "http_access deny all"]
    else:
        # Loopback-only lab: every client may use every method to every port (CONNECT included).
        access = ["http_access allow all"]
    lines = [
        f"http_port {host}:{port}",
        "visible_hostname lab-squid",
        *access,
        f"tcp_outgoing_address {source}",
        "via off",
        "forwarded_for delete",
        "reply_header_access X-Cache deny all",
        "reply_header_access X-Cache-Lookup deny all",
        "reply_header_access Via deny all",
        "request_header_access Via deny all",
        "request_header_access X-Forwarded-For deny all",
        "dns_nameservers 127.0.0.1",
        "cache deny all",
        "cache_mem 8 MB",
        "memory_pools off",
        "shutdown_lifetime 0 seconds",
        "pinger_enable off",
        "netdb_filename none",
        "logfile_rotate 0",
        f"pid_filename {workdir / 'squid.pid'}",
        f"cache_log {workdir / 'cache.log'}",
        f"access_log stdio:{workdir / 'access.log'}",
        f"coredump_dir {workdir}",
    ]
    if os.geteuid() == 0:
        lines.append("cache_effective_user proxy")
    config = workdir / "squid.conf"
    config.write_text("\n".join(lines) + "\n")
    return _launch(
        kind="squid", command=[SQUID, "-N", "-f", str(config)], host=host, port=port,
        source=source, workdir=workdir, username=username, password=password, timeout=timeout,
    )


def _launch(*, kind: str, command: list[str], host: str, port: int, source: str, workdir: Path,
            username: str | None, password: str | None, timeout: float) -> StockProxy:
    with open(workdir / f"{kind}-console.log", "wb") as console:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            cwd=workdir, start_new_session=True,
        )
    proxy = StockProxy(kind=kind, host=host, port=port, source=source, workdir=workdir,
                       process=process, username=username, password=password)
    try:
        wait_until(lambda: not proxy.running() or _accepts(host, port), timeout=timeout,
                   message=f"{kind} accepting on {host}:{port}")
    except AssertionError:
        output = proxy.output()
        proxy.stop()
        raise ProxyStartError(f"{kind} did not start within {timeout}s:\n{output}") from None
    if not proxy.running():
        output = proxy.output()
        proxy.stop()
        raise ProxyStartError(f"{kind} exited with {process.returncode}:\n{output}")
    return proxy


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _workdir(kind: str, *, user: str) -> Path:
    # Not pytest's tmp_path: it is 0700, and squid/tinyproxy drop privileges to their own user.
    path = Path(tempfile.mkdtemp(prefix=f"scrapoxy-lab-{kind}-"))
    path.chmod(0o755)
    if os.geteuid() == 0 and _user_exists(user):
        shutil.chown(path, user=user, group=_group_of(user))
    return path


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _group_of(user: str) -> str:
    import grp

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
