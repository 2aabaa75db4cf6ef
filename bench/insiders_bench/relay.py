"""A forward proxy on loopback that all the upstream's traffic of a benchmark round goes through.

It is how the upstream-cache rows unplug the upstream for real: the daemons and the clients are
given it as HTTPS_PROXY/HTTP_PROXY (httpx, pip and uv honour them), and `stop()` closes its
listener and every tunnel, so that each later connection to the upstream is refused, as with a
cable pulled. It also counts the bytes that came from the upstream, which is the bandwidth
figure of each row. HTTPS goes through CONNECT tunnels (end to end TLS, nothing decrypted);
plain HTTP (the smoke test's local upstream) through absolute-form requests, one per connection.

It can also stand for a site's link to the internet (`Link`): a round trip before each request
goes up (each write from a client to the upstream, which is one request or a TLS flight), and a
bandwidth that every connection from the upstream shares. The benchmark's machine may reach its
upstream at the speed of its own disk; a team's index sits behind such a link, and what a cache
saves depends on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

BUFFER = 256 << 10
MAX_HEAD = 64 << 10
_HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection")


class Link:
    """A round trip per request and a shared bandwidth (0: no limit), as a site's uplink."""

    def __init__(self, rtt: float = 0.0, rate: float = 0.0) -> None:
        self.rtt = rtt  # seconds
        self.rate = rate  # bytes per second, all connections together
        self._free_at = 0.0
        self._lock = threading.Lock()

    def request(self) -> None:
        if self.rtt:
            time.sleep(self.rtt)

    def carry(self, size: int) -> None:
        """Wait until the link has carried `size` more bytes after those queued before them."""
        if not self.rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size / self.rate
            until = self._free_at
        if (delay := until - time.monotonic()) > 0:
            time.sleep(delay)

    def describe(self) -> str:
        if not (self.rtt or self.rate):
            return "the machine's own link"
        rate = f"{self.rate * 8 / 1e6:.0f} Mbit/s" if self.rate else "unlimited"
        return f"{self.rtt * 1000:.0f} ms round trip, {rate} shared"


class Relay:
    """CONNECT and absolute-form HTTP on 127.0.0.1:port, a thread per direction."""

    def __init__(self, link: Link | None = None) -> None:
        self.link = link or Link()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.from_upstream = 0  # bytes
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Unplug: no new connection is accepted, every open one is cut."""
        self._stopped.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                self._track(client)
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stopped.is_set():
                sock.close()
                raise OSError("unplugged")
            self._open.add(sock)
            self.connections += 1

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)
        for sock in socks:
            sock.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            head, rest = _read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if method == b"CONNECT":
                host, _, port = target.decode("ascii").rpartition(":")
                upstream = _connect(host.strip("[]"), int(port))
                self.link.request()  # the connection's own round trip
                upstream.settimeout(None)
                self._track(upstream)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:
                url = urlsplit(target.decode("ascii"))
                upstream = _connect(url.hostname or "", url.port or 80)
                upstream.settimeout(None)
                self._track(upstream)
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                first = _rewrite(head, f"{method.decode()} {path} {version.decode()}") + rest
            if first:
                self.link.request()
                upstream.sendall(first)
            other = threading.Thread(
                target=self._pump, args=(client, upstream), kwargs={"up": True}, daemon=True
            )
            other.start()
            self._pump(upstream, client, count=True, http=method != b"CONNECT")
            other.join()
        except (OSError, ValueError):
            pass  # a refused or cut connection: the client sees it as such
        finally:
            self._forget(client, *([upstream] if upstream else []))

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        *,
        count: bool = False,
        http: bool = False,
        up: bool = False,
    ) -> None:
        """Copy until end of file, then end the other direction too. An HTTP answer's head gets
        `Connection: close`: the relay forwards one request per connection. Upstream-bound
        writes wait a round trip, the upstream's bytes the link's bandwidth."""
        try:
            if http:
                head, rest = _read_head(source)
                status = head.split(b"\r\n", 1)[0].decode("latin-1")
                data = _rewrite(head, status) + rest
                self._count(len(data))
                sink.sendall(data)
            while chunk := source.recv(BUFFER):
                if up:
                    self.link.request()
                if count:
                    self.link.carry(len(chunk))
                    self._count(len(chunk))
                sink.sendall(chunk)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _count(self, size: int) -> None:
        with self._lock:
            self.from_upstream += size


_addresses: dict[tuple[str, int], tuple[Any, ...]] = {}
_resolving = threading.Lock()


def _address(host: str, port: int) -> tuple[Any, ...]:
    """The upstream's address, looked up once per host and port, as a site's caching resolver
    answers: this machine's resolver drops lookups made many at once (a client that opens a
    hundred connections would wait 5 or 10 s on some of them, and one that multiplexes on one
    connection would not: a figure of the resolver, not of the client); a failed lookup is
    tried again."""
    with _resolving:
        if (host, port) not in _addresses:
            for attempt in range(3):
                try:
                    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    break
                except socket.gaierror:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)
            _addresses[(host, port)] = found[0][4]
        return _addresses[(host, port)]


def _connect(host: str, port: int) -> socket.socket:
    """A connection to the upstream."""
    return socket.create_connection(_address(host, port)[:2], timeout=30)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP message head (up to the blank line) and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(BUFFER)
        if not chunk:
            raise ValueError("connection closed before a full head")
        data += chunk
        if len(data) > MAX_HEAD:
            raise ValueError("head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _rewrite(head: bytes, first_line: str) -> bytes:
    """The head with another first line, no hop-by-hop headers, and `Connection: close`."""
    lines = [first_line.encode("latin-1")]
    for line in head.split(b"\r\n")[1:]:
        if line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP:
            lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"
