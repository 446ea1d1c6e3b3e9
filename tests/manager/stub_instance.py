"""A stand-in for ``scrapoxy-instance`` speaking its process protocol.

Listens on ``--host``/``--port`` (0 = any), prints ``listening on HOST:PORT``, and answers every
HTTP request (absolute-form proxy requests included) with 200 and its ``--source`` as the body,
which is what the health check's IP echo would show through a real instance.
"""
from __future__ import annotations

import argparse
import http.server
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--fail-with", default=None, help="print this to stderr and exit 3")
    args = parser.parse_args()
    if args.fail_with:
        print(args.fail_with, file=sys.stderr, flush=True)
        sys.exit(3)
    source = args.source.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(source)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(source)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    print("starting up", file=sys.stderr, flush=True)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
