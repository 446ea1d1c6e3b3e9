"""A stand-in for the commander's API (threaded, loopback) with an adjustable answer delay.

It keeps a small pool: ``instances`` (name -> alive), ``scaling``; ``POST /api/instances/stop``
removes the instance and, when ``replace`` is on, adds a fresh alive one (as the manager would).
``delay_s`` makes every answer slow, which is what the reactor-lag test needs.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any


class FakeCommander:
    def __init__(self, *, instances: int = 2, delay_s: float = 0.0, replace: bool = True) -> None:
        self.delay_s = delay_s
        self.replace = replace
        self.lock = threading.Lock()
        self._names = count(1)
        self.instances: dict[str, bool] = {f"inst-{next(self._names)}": True
                                           for _ in range(instances)}
        self.scaling = {"min": 1, "required": 1, "max": instances}
        self.calls: list[tuple[str, str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api"

    def start(self) -> FakeCommander:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def alive_names(self) -> list[str]:
        with self.lock:
            return [name for name, alive in self.instances.items() if alive]

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.calls.append((method, path, body))
            if (method, path) == ("GET", "/api/instances"):
                return 200, [{"name": name, "provider": "fake", "status": "started",
                              "alive": alive, "fingerprint": None, "address": None,
                              "region": None, "started_at": None, "requests": 0}
                             for name, alive in self.instances.items()]
            if (method, path) == ("POST", "/api/instances/stop"):
                name = body.get("name")
                if name not in self.instances:
                    return 404, {"error": "not_found", "message": name}
                del self.instances[name]
                if self.replace:
                    self.instances[f"inst-{next(self._names)}"] = True
                return 200, {"alive": sum(self.instances.values())}
            if (method, path) == ("PATCH", "/api/config"):
                return 200, {"manager": {**body.get("manager", {})}}
            if (method, path) == ("GET", "/metrics"):
                return 200, "scrapoxy_instances_alive %d\n" % sum(self.instances.values())
            if (method, path) == ("GET", "/api/scaling"):
                return 200, dict(self.scaling)
            if (method, path) == ("PATCH", "/api/scaling"):
                self.scaling.update(body)
                return 200, dict(self.scaling)
            return 404, {"error": "not_found", "message": path}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if fake.delay_s:
                    time.sleep(fake.delay_s)  # a slow commander (this thread only)
                status, payload = fake._answer(self.command, self.path, body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve  # noqa: N815

        return Handler
