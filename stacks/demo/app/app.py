#!/usr/bin/env python3
"""The demo's web service: standard library only, so it runs on the public
`python` image and on its local replica alike.

  GET /health   200 "ok"
  GET /         JSON: service, version, the answering container, message.txt
  GET /redis    whether the `redis` datastore answers (PING through the
                stack network, as a service reaches a datastore by name)

Edit message.txt (or this file) while `devstack up` runs: `api`, built from
this directory, is rebuilt and swapped without a failed request.
"""

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
HERE = os.path.dirname(os.path.abspath(__file__))


def message():
    try:
        with open(os.path.join(HERE, "message.txt"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def redis_ping():
    try:
        with socket.create_connection(("redis", 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).decode("ascii", "replace").strip()
    except OSError as e:
        return f"unreachable: {e}"


class Handler(BaseHTTPRequestHandler):
    server_version = "devstack-demo/1"
    # One request per connection: nothing idle holds up a graceful stop.
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        print(f"{self.client_address[0]} {fmt % args}", file=sys.stderr, flush=True)

    def answer(self, status, body):
        data = (json.dumps(body, sort_keys=True) + "\n").encode() if isinstance(body, dict) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.answer(200, "ok\n")
        elif path in ("/", "/api", "/api/"):
            self.answer(200, {
                "service": os.environ.get("SERVICE"),
                "version": os.environ.get("VERSION"),
                "container": socket.gethostname(),
                "message": message(),
            })
        elif path in ("/redis", "/api/redis"):
            self.answer(200, {"redis": redis_ping()})
        else:
            self.answer(404, {"error": "not found", "path": path})


def main():
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    # As PID 1 a process gets no default SIGTERM action: stop on it, letting
    # requests in flight finish, so a swap's old container goes at once.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on :{PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
