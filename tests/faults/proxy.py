"""A fault-injecting HTTP proxy in front of a real server (moto's S3): requests go through over
real sockets, and the test decides, request by request, what the network does to them.

Modes: ``up`` (forward); ``down`` (drop every connection without an answer, as a dead or
unreachable store does; ``after=n`` lets ``n`` more requests through first); ``flap`` (every
``n``-th request answered ``503 SlowDown`` without reaching the server, the rest forwarded: a
store under load that botocore's retries ride out).
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.mode = "up"
        self.every = 3
        self.after = 0
        self.requests = 0
        self.injected = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "503":
                    payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.mode == "down":
                if self.after > 0:
                    self.after -= 1
                    return None
                self.injected += 1
                return "drop"
            if self.mode == "flap" and self.requests % self.every == 0:
                self.injected += 1
                return "503"
            return None

    def set(self, mode: str, every: int = 3, after: int = 0) -> None:
        assert mode in ("up", "down", "flap")
        with self._lock:
            self.mode, self.every, self.after = mode, every, after

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
