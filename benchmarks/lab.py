"""The benchmark's lab: the origin, squid, haproxy and scrapoxy-server on free loopback ports.

Every process is started in its own session (so its whole process group can be signalled) and
registered with a ``Lab``; ``Lab.close()`` stops them all and removes the work folder, and
``run.py`` calls it from ``finally`` and from its signal handlers. Nothing here imports from
``tests/``: the squid settings that matter (see ``/work/shared/TRAPS.md``) are repeated below.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SQUID = shutil.which("squid") or "/usr/sbin/squid"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent

# Bodies the origin serves, by URL path.
BODIES = {"/1k": 1024, "/1m": 1024 * 1024, "/100m": 100 * 1024 * 1024}


class LabError(RuntimeError):
    """A lab process did not start; the message carries its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def accepts(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    # The command name may contain spaces and parentheses: split after the last ")".
    fields = text[text.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Service:
    """A process the lab started. ``pid`` is the process measured (CPU, RSS)."""

    name: str
    port: int
    process: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self, limit: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


class Lab:
    """Owns a work folder and every process started in it."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="scrapoxy-bench-"))
        # squid drops privileges to user proxy, nginx workers may too: the folder must be
        # readable (and for squid writable) by them, which a 0700 temp dir is not.
        self.workdir.chmod(0o755)
        self.services: list[Service] = []

    # --- process plumbing ----------------------------------------------------------------

    def spawn(self, name: str, command: list[str], *, port: int, timeout: float = 20.0,
              env: dict | None = None, cwd: Path | None = None) -> Service:
        log = self.workdir / f"{name}.console.log"
        with open(log, "wb") as console:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                cwd=cwd or self.workdir, start_new_session=True, env=env,
            )
        service = Service(name=name, port=port, process=process, log=log)
        self.services.append(service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.running():
                raise LabError(f"{name} exited with {process.returncode}:\n{self._logs(name)}")
            if accepts(port):
                return service
            time.sleep(0.05)
        raise LabError(f"{name} not accepting on {HOST}:{port} within {timeout}s:\n"
                       f"{self._logs(name)}")

    def _logs(self, name: str) -> str:
        texts = []
        for path in sorted(self.workdir.glob(f"{name}*.log")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)

    def stop(self, service: Service) -> None:
        if service.running():
            try:
                os.killpg(service.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                service.process.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(service.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                service.process.wait(5)
        else:
            # The leader is gone; children in its group may not be.
            try:
                os.killpg(service.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if service in self.services:
            self.services.remove(service)

    def close(self, *, keep: bool = False) -> None:
        for service in reversed(list(self.services)):
            self.stop(service)
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the origin ----------------------------------------------------------------------

    def make_bodies(self, *, big: bool) -> Path:
        www = self.workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "1k").write_bytes(b"x" * BODIES["/1k"])
        (www / "1m").write_bytes(b"y" * BODIES["/1m"])
        if big:
            # Sparse: no 100 MiB written to disk; nginx reads zeros from the page cache.
            with open(www / "100m", "wb") as f:
                f.truncate(BODIES["/100m"])
        for path in [www, *www.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return www

    def make_cert(self) -> tuple[Path, Path]:
        cert, key = self.workdir / "origin.crt", self.workdir / "origin.key"
        subprocess.run(
            [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )
        cert.chmod(0o644)
        key.chmod(0o644)
        return cert, key

    def start_origin(self, *, big: bool, tls: bool) -> Service:
        """nginx serving /1k, /1m (and /100m), /ip; also TLS on ``extra['tls_port']``.

        Falls back to ``origin.py`` (asyncio, plain HTTP only) when nginx is missing.
        """
        www = self.make_bodies(big=big)
        port = free_port()
        if not os.path.exists(NGINX):
            service = self.spawn("origin", [sys.executable, str(Path(__file__).with_name("origin.py")),
                                            "--port", str(port), "--root", str(www)], port=port)
            service.extra.update(kind="python", tls_port=None, cert=None)
            return service
        tls_port = free_port() if tls else None
        cert = key = None
        if tls:
            cert, key = self.make_cert()
        temp = self.workdir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        temp.chmod(0o777)
        tls_server = ""
        if tls:
            tls_server = f"""
    server {{
        listen {HOST}:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:SSL:1m;
        root {www};
        location = /ip {{ default_type text/plain; return 200 "$remote_addr"; }}
    }}"""
        config = self.workdir / "nginx.conf"
        # One process (master_process off) so its CPU is one /proc entry; long keep-alive so
        # squid and wrk reuse their connections as a real origin farm would let them.
        config.write_text(f"""
daemon off;
master_process off;
worker_rlimit_nofile 30000;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/origin.error.log warn;
events {{ worker_connections 20000; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen {HOST}:{port};
        root {www};
        location = /ip {{ default_type text/plain; return 200 "$remote_addr"; }}
    }}{tls_server}
}}
""")
        service = self.spawn("origin", [NGINX, "-p", str(self.workdir), "-c", str(config)],
                             port=port)
        if tls:
            deadline = time.monotonic() + 10
            while not accepts(tls_port) and time.monotonic() < deadline:
                time.sleep(0.05)
        service.extra.update(kind="nginx", tls_port=tls_port, cert=str(cert) if cert else None)
        return service

    # --- squid, the instance -------------------------------------------------------------

    def start_squid(self) -> Service:
        folder = self.workdir / "squid"
        folder.mkdir()
        folder.chmod(0o755)
        if os.geteuid() == 0 and _user_exists("proxy"):
            shutil.chown(folder, user="proxy", group=_group_of("proxy"))
        port = free_port()
        lines = [
            f"http_port {HOST}:{port}",
            "visible_hostname bench-squid",
            # Loopback-only lab: every client may use every method to every port, CONNECT too.
            "http_access allow all",
            "via off",
            "forwarded_for delete",
            "reply_header_access X-Cache deny all",
            "reply_header_access X-Cache-Lookup deny all",
            "dns_nameservers 127.0.0.1",
            "cache deny all",
            "cache_mem 8 MB",
            "shutdown_lifetime 0 seconds",
            "pinger_enable off",
            "netdb_filename none",
            "logfile_rotate 0",
            "max_filedescriptors 30000",
            # A per-request access log line costs CPU the master does not spend either.
            "access_log none",
            f"pid_filename {folder / 'squid.pid'}",
            f"cache_log {folder / 'cache.log'}",
            f"coredump_dir {folder}",
        ]
        if os.geteuid() == 0:
            lines.append("cache_effective_user proxy")
        config = folder / "squid.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o644)
        return self.spawn("squid", [SQUID, "-N", "-f", str(config)], port=port)

    # --- haproxy, the peer ---------------------------------------------------------------

    def start_haproxy(self, *, squid_port: int) -> Service:
        port = free_port()
        config = self.workdir / "haproxy.cfg"
        # One thread: the master is one process on one core, so this compares like with like.
        config.write_text(f"""
global
    maxconn 9000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend bench
    bind {HOST}:{port}
    default_backend squid
backend squid
    server squid {HOST}:{squid_port}
""")
        return self.spawn("haproxy", [HAPROXY, "-db", "-f", str(config)], port=port)

    # --- scrapoxy-server, the master -----------------------------------------------------

    def start_master(self, *, name: str, proxies: list[str], check_url: str,
                     ca_file: str | None, alive_check_interval: float = 2.0,
                     timeout: float = 60.0) -> Service:
        """``scrapoxy-server start`` with a static provider; returns once all are alive."""
        port, commander_port = free_port(), free_port()
        password = "bench-" + base64.b32encode(os.urandom(10)).decode().lower()
        count = len(proxies)
        toml = [
            "[master]", f'host = "{HOST}"', f"port = {port}",
            "wait_for_instance = 30.0",
        ]
        if ca_file:
            toml.append(f'ca_file = "{ca_file}"')
        toml += [
            "", "[commander]", f'host = "{HOST}"', f"port = {commander_port}",
            f'password = "{password}"',
            "", "[scaling]", f"min = {count}", f"required = {count}", f"max = {count}",
            "", "[manager]", f'check_url = "{check_url}"',
            f"alive_check_interval = {alive_check_interval}",
            "terminate_on_shutdown = false",
            "", "[[providers]]", 'type = "static"', 'name = "bench"',
            "proxies = [" + ", ".join(json.dumps(p) for p in proxies) + "]",
        ]
        config = self.workdir / f"{name}.toml"
        config.write_text("\n".join(toml) + "\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The server writes its state file next to the config: keep it in the lab folder.
        command = [sys.executable, "-m", "scrapoxy_server.cli", "start", str(config),
                   "--log-level", "WARNING"]
        service = self.spawn(name, command, port=port, env=env, timeout=timeout)
        service.extra.update(commander_port=commander_port, password=password, count=count)
        wait_alive(service, count=count, timeout=timeout)
        return service


def commander_get(service: Service, path: str, timeout: float = 10.0):
    token = base64.b64encode(f"admin:{service.extra['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://{HOST}:{service.extra['commander_port']}{path}",
        headers={"Authorization": f"Basic {token}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_alive(service: Service, *, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    alive = 0
    while time.monotonic() < deadline:
        if not service.running():
            raise LabError(f"{service.name} exited:\n{service.output()}")
        try:
            instances = commander_get(service, "/api/instances")
            alive = sum(1 for i in instances if i.get("alive"))
            if alive >= count:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    raise LabError(f"{service.name}: {alive}/{count} instances alive after {timeout}s:\n"
                   f"{service.output()}")


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
