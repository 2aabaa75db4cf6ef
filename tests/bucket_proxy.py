"""A plain HTTP proxy before an S3 gateway on loopback, for the bucket tests and the benchmark.

It notes, for every request, when it started and when its answer was complete: what a reader of
the bucket could see, and in which order (the bucket tests watch the daemon's writes through it).
Given a `delay`, it answers each request that much late: a bucket in another machine room (the
benchmark's distant copies). Threaded, one connection to the gateway per request: requests in
flight overlap here, and their delays with them, as they would over a network.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

# Hop-by-hop, or set again from the body as forwarded.
_NOT_FORWARDED = ("transfer-encoding", "connection", "expect", "content-length")


class BucketProxy:
    """The proxy before the gateway at `upstream` (http://HOST:PORT): its own `endpoint`."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.delay = delay
        self.log: list[tuple[float, float, str, str]] = []  # start, end, method, path
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                started = time.monotonic()
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
                headers["Content-Length"] = str(len(body))
                if proxy.delay:
                    time.sleep(proxy.delay)
                connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                # Written, as a reader of the bucket sees it. Noted before the answer goes back:
                # once it has, the daemon may start its next request, or say it is done, before
                # this thread runs on.
                with proxy._lock:
                    proxy.log.append((started, time.monotonic(), self.command, self.path))
                connection.close()
                self.send_response_only(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in _NOT_FORWARDED:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.wfile.flush()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler

    def puts(self, bucket: str, prefix: str) -> list[tuple[float, float, str]]:
        """(start, end, key) of every PutObject into the bucket's prefix, in starting order."""
        head = f"/{bucket}/{prefix}"
        with self._lock:
            found = [
                (start, end, unquote(path.split("?")[0]).removeprefix(head))
                for start, end, method, path in self.log
                if method == "PUT" and path.startswith(head) and "?" not in path.split("/")[-1]
            ]
        return sorted(found)

    def most_in_flight(self) -> int:
        """The most requests that were in flight at once."""
        with self._lock:
            edges = sorted(
                [(s, 1) for s, _, _, _ in self.log] + [(e, -1) for _, e, _, _ in self.log]
            )
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
