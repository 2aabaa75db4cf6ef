"""Cache mode's /files/NAME/FILENAME for a project the index does not host: fetched once, verified.

The first request for a file streams it from the upstream to the client while writing it to the
file cache (insiders.index.filecache). The sha256 the upstream's page announced is checked before
the last chunk goes out: on a mismatch nothing is kept, the connection is closed short of the
length announced, and the client's download fails instead of installing other bytes. `.metadata`
files (PEP 658) are fetched and checked the same way, against the page's core-metadata hash.

Requests for a file being fetched wait for that one fetch (single flight) and are then answered
from the cache. A HEAD or a range of a file not cached yet (an installer reading a wheel's metadata
from its end, as uv does when the page announces no metadata file) does not wait for the whole
file: a HEAD is answered from the size the page announces, a range is relayed from the upstream
as a client in redirect mode would have read it there. Those parts are never kept; the file is
kept, and answered whole, only checked.

A cached file is answered with its sha256 as ETag, HEAD and a single Range, or, behind the
shipped nginx front (which sends `X-Insiders-Accel: /PREFIX/`) and when the files are kept where
nginx can read them (`file-cache-directory`), with an empty answer whose `X-Accel-Redirect` lets
nginx send the file itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

import httpx
import trio

from insiders.documents.model import FileLink, ProjectPage
from insiders.errors import HashMismatch, UpstreamError
from insiders.http.answers import header, send_text
from insiders.http.asgi import Scope, Send
from insiders.http.connections import current_connection
from insiders.names import NormalizedName

from .filecache import Entry, FileCache
from .upstream import Upstream

if TYPE_CHECKING:
    from trio._file_io import AsyncIOWrapper  # what trio.wrap_file returns (not exported)

log = logging.getLogger(__name__)

CHUNK = 256 << 10
ACCEL_HEADER = b"x-insiders-accel"
_ACCEL_PREFIX = re.compile(r"^/[A-Za-z0-9/_.-]*/$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# A wheel's or sdist's filename (what a hostile upstream page names otherwise is not fetched).
SAFE_FILENAME = re.compile(r"[A-Za-z0-9_+!][A-Za-z0-9._+!-]*")
METADATA = ".metadata"


@dataclass(eq=False)
class _Flight:
    """One fetch of one file; the requests that came meanwhile wait for `done`."""

    done: trio.Event = field(default_factory=trio.Event)
    failure: str | None = None  # the file could not be had
    unkept: str | None = None  # the file was had, checked, and not kept


class _Sink:
    """A fetch's temp file in the cache, given up (not the fetch) on the first OSError."""

    def __init__(self, cache: FileCache, name: str, flight: _Flight) -> None:
        self.cache, self.name, self.flight = cache, name, flight
        self.out: AsyncIOWrapper[BinaryIO] | None = None
        self.temp: Path | None = None

    @classmethod
    async def open(cls, cache: FileCache, name: str, flight: _Flight) -> _Sink:
        sink = cls(cache, name, flight)
        try:
            fd, sink.temp = await trio.to_thread.run_sync(cache.temp_file, name)
            sink.out = trio.wrap_file(open(fd, "wb"))  # noqa: ASYNC230, SIM115  (an fd)
        except OSError as error:
            await sink.give_up(error)
        return sink

    async def write(self, chunk: bytes) -> None:
        if self.out is not None:
            try:
                await self.out.write(chunk)
            except OSError as error:
                await self.give_up(error)

    async def keep(self, filename: str, sha256: str) -> Entry | None:
        if self.out is None or self.temp is None:
            return None
        try:
            await self.out.aclose()
            kept = await trio.to_thread.run_sync(
                self.cache.keep, self.name, filename, self.temp, sha256
            )
        except OSError as error:
            await self.give_up(error)
            return None
        self.out = self.temp = None
        if kept is None:
            self.flight.unkept = "larger than [upstream] file-cache-size: not kept"
        return kept

    async def give_up(self, error: OSError) -> None:
        self.flight.unkept = f"cannot write the file cache: {error.strerror or error}"
        log.warning("%s: %s", self.name, self.flight.unkept)
        await self.discard()

    async def discard(self) -> None:
        out, temp, self.out, self.temp = self.out, self.temp, None, None
        if out is not None:
            with contextlib.suppress(OSError):  # a full disk also fails the close's flush
                await out.aclose()
        if temp is not None:
            await trio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))


@dataclass(frozen=True)
class Wanted:
    """What the upstream's page says of a file: where it is and what its sha256 must be."""

    url: str
    sha256: str
    content_type: bytes
    size: int | None = None  # what the page announces (PEP 700), for a HEAD before the fetch


def wanted(page: ProjectPage, filename: str) -> Wanted | str | None:
    """The file's URL and digest on the page; None when the page does not list it; a message
    when it lists it without a sha256 (nothing unverified is cached)."""
    metadata = filename.endswith(METADATA)
    base = filename.removesuffix(METADATA) if metadata else filename
    if not SAFE_FILENAME.fullmatch(base):
        return None
    link: FileLink | None = next((f for f in page.files if f.filename == base), None)
    if link is None:
        return None
    hashes = link.core_metadata if metadata else link.hashes
    if metadata and hashes is None:
        return None
    digest = (hashes or {}).get("sha256", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return f"the upstream announces no sha256 for {filename}: it is not cached"
    if metadata:
        return Wanted(link.url + METADATA, digest, b"text/plain; charset=utf-8")
    return Wanted(link.url, digest, b"application/octet-stream", link.size)


class UpstreamFiles:
    """The file cache's HTTP side: answers from the cache, fetches what it lacks, one at a time."""

    def __init__(self, cache: FileCache) -> None:
        self.cache = cache
        self._flights: dict[tuple[str, str], _Flight] = {}

    async def serve(
        self, scope: Scope, send: Send, upstream: Upstream, name: NormalizedName, filename: str
    ) -> None:
        entry = await trio.to_thread.run_sync(self.cache.lookup, name, filename)
        if entry is not None:
            return await self._send_entry(scope, send, entry)
        try:
            page = await upstream.page(name)
        except UpstreamError as error:
            return await send_text(send, 502, str(error))
        if page is None:
            return await send_text(send, 404, f"No project {name} here or upstream")
        found = wanted(page, filename)
        if found is None:
            return await send_text(send, 404, f"No file {filename} in {name}")
        if isinstance(found, str):
            return await send_text(send, 502, found)
        whole = scope["method"] == "GET" and not header(scope, b"range")
        if not whole and await _relay_part(scope, send, upstream, found):
            return None
        key = (name, filename)
        while True:
            flight = self._flights.get(key)
            if flight is None:
                # A fetch that ended while the page was looked up: its file is there now.
                done = self.cache.peek(name, filename)
                if done is not None:
                    return await self._send_entry(scope, send, done)
                break
            await flight.done.wait()
            if flight.failure is not None:
                return await send_text(send, 502, flight.failure)
        self._flights[key] = flight = _Flight()
        # A part that could not be relayed (see _relay_part) waits for the checked file: made
        # to wait, every metadata read of uv's resolution waited for a whole wheel (uv took
        # 1.2x as long as from the upstream directly); answered with the whole file, the index
        # would look like one without ranges, and uv would download every wheel twice.
        try:
            to_client = send if whole else None
            entry = await self._fetch(upstream, name, filename, found, to_client, flight)
        finally:
            del self._flights[key]
            flight.done.set()
        if to_client is None:
            if flight.failure is not None:
                return await send_text(send, 502, flight.failure)
            if entry is None and scope["method"] == "GET":
                # Checked but not kept (a full disk, larger than the cache): sent whole, as
                # RFC 9110 allows for a range.
                await self._fetch(upstream, name, filename, found, send, _Flight())
                return None
            if entry is None:
                return await send_text(send, 503, f"{filename}: {flight.unkept}")
            await self._send_entry(scope, send, entry)

    async def fetch_ahead(
        self, upstream: Upstream, name: str, filename: str, want: Wanted
    ) -> int | None:
        """Fetch a file into the cache with no client waiting (`insidersctl cache fetch`): its
        size, or None when it was there; UpstreamError when it cannot be had."""
        key = (name, filename)
        while True:
            if await trio.to_thread.run_sync(self.cache.peek, name, filename) is not None:
                return None
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.failure is not None:
                raise UpstreamError(flight.failure)
        self._flights[key] = flight = _Flight()
        try:
            entry = await self._fetch(upstream, name, filename, want, None, flight)
        finally:
            del self._flights[key]
            flight.done.set()
        if flight.failure is not None:
            raise UpstreamError(flight.failure)
        if entry is None:
            raise UpstreamError(str(flight.unkept))
        return entry.size

    async def _fetch(
        self,
        upstream: Upstream,
        name: str,
        filename: str,
        want: Wanted,
        send: Send | None,
        flight: _Flight,
    ) -> Entry | None:
        """Long because it is one stream with three ends (the upstream, the temp file, the client)
        and each way it can fail. Fetch into a temp file, verify, keep; with `send`, stream to
        the client too, holding the last chunk back until the digest is known. On failure
        `flight.failure` says why, and a client already answered has its connection closed.
        The cache is a help, not a condition: a file that cannot be written (a full disk) or
        kept (larger than the cache) still reaches the client, checked (`flight.unkept` says why
        it was not kept)."""
        sink = await _Sink.open(self.cache, name, flight)
        digest = hashlib.sha256()
        started = False
        kept: Entry | None = None
        try:
            if (down := upstream.down()) is not None:
                raise UpstreamError(down)
            try:
                async with upstream.client.stream("GET", want.url) as response:
                    upstream.answered()
                    if response.status_code != 200:
                        raise UpstreamError(
                            f"upstream {want.url} answered {response.status_code} "
                            f"{response.reason_phrase}"
                        )
                    length = response.headers.get("content-length")
                    if response.headers.get("content-encoding"):
                        length = None
                    held = b""
                    async for chunk in response.aiter_bytes(CHUNK):
                        upstream.answered()
                        digest.update(chunk)
                        # Each chunk to the client first, then to the disk: the client
                        # waits for no write.
                        if held:
                            if send is not None:
                                if not started:
                                    started = await _start(send, want, length)
                                await send(
                                    {"type": "http.response.body", "body": held, "more_body": True}
                                )
                            await sink.write(held)
                        held = chunk
            except httpx.HTTPError as error:
                raise UpstreamError(upstream.failed(error, want.url)) from None
            if digest.hexdigest() != want.sha256:
                raise HashMismatch(
                    f"upstream {want.url} sent other bytes than its page announced "
                    f"(sha256 {digest.hexdigest()}, announced {want.sha256}): not kept"
                )
            # Checked: the last chunk goes out now, and the file is kept (fsynced, renamed)
            # after; an installer downloads one file after another, and each one's last bytes
            # used to wait for the fsync of the whole file. The requests waiting on this
            # flight still wait for the file to be kept.
            try:
                if send is not None:
                    if not started:
                        started = await _start(send, want, length)
                    await send({"type": "http.response.body", "body": held})
            finally:
                await sink.write(held)
                kept = await sink.keep(filename, want.sha256)
            return kept
        except UpstreamError as error:
            flight.failure = str(error)
            log.warning("%s/%s: %s", name, filename, error)
            if send is not None:
                if started:
                    _abort()
                else:
                    await send_text(send, 502, str(error))
            return None
        finally:
            await sink.discard()

    async def _send_entry(self, scope: Scope, send: Send, entry: Entry) -> None:
        """Long because it is an HTTP file answer: 304, the front's redirect, Range and HEAD."""
        content_type = (
            b"text/plain; charset=utf-8"
            if entry.filename.endswith(METADATA)
            else b"application/octet-stream"
        )
        etag = f'"{entry.sha256}"'.encode()
        headers = [
            (b"content-type", content_type),
            (b"etag", etag),
            (b"cache-control", b"public, max-age=31536000, immutable"),
            (b"accept-ranges", b"bytes"),
        ]
        if header(scope, b"if-none-match") == etag:
            return await _empty(send, 304, headers[1:])
        accel = header(scope, ACCEL_HEADER).decode("latin-1")
        # Only a directory written for nginx to read can be sent by nginx.
        if accel and self.cache.shared and _ACCEL_PREFIX.match(accel):
            location = accel + quote(entry.relative)
            return await _empty(send, 200, [*headers, (b"x-accel-redirect", location.encode())])
        start, end, status = 0, entry.size, 200
        wanted_range = header(scope, b"range").decode("latin-1").strip()
        if wanted_range:
            parsed = _parse_range(wanted_range, entry.size)
            if parsed is None:
                headers.append((b"content-range", f"bytes */{entry.size}".encode()))
                return await _empty(send, 416, headers)
            if parsed != (0, entry.size):
                start, end, status = *parsed, 206
                headers.append((b"content-range", f"bytes {start}-{end - 1}/{entry.size}".encode()))
        headers.append((b"content-length", str(end - start).encode()))
        try:
            handle = await trio.open_file(self.cache.path(entry), "rb")
        except FileNotFoundError:
            # Evicted or pruned between the lookup and here: the next request fetches it again.
            return await send_text(send, 503, f"{entry.filename} was just evicted; try again")
        async with handle:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if scope["method"] == "HEAD":
                return await send({"type": "http.response.body", "body": b""})
            await handle.seek(start)
            left = end - start
            while left > 0 and (chunk := await handle.read(min(CHUNK, left))):
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _relay_part(scope: Scope, send: Send, upstream: Upstream, want: Wanted) -> bool:
    """Answer a HEAD from the size the page announces, or a single range from the upstream's own
    answer to it; False when this cannot be done (no size announced, an upstream down or without
    ranges, several ranges, a range of a file of another size than announced) and nothing was
    sent. The bytes of a range are relayed as they come, unchecked, as a client in redirect mode
    would read them: no ETag and no caching, since they are not known to be the file's. (A
    HEAD's ETag is the sha256 a GET's answer is checked against: it can only ever be that
    file.)"""
    headers = [(b"content-type", want.content_type), (b"accept-ranges", b"bytes")]
    if scope["method"] == "HEAD":
        if want.size is None:
            return False
        headers += [
            (b"content-length", str(want.size).encode()),
            (b"etag", f'"{want.sha256}"'.encode()),
        ]
        await _empty(send, 200, headers)
        return True
    wanted_range = header(scope, b"range").decode("latin-1").strip()
    if not _RANGE.match(wanted_range) or upstream.down() is not None:
        return False
    started = False
    try:
        async with upstream.client.stream(
            "GET", want.url, headers={"Range": wanted_range, "Accept-Encoding": "identity"}
        ) as response:
            upstream.answered()
            if response.status_code not in (206, 416) or not _of_size(response, want.size):
                return False
            headers.append((b"cache-control", b"no-store"))
            for name in ("content-range", "content-length"):
                if name in response.headers:
                    headers.append((name.encode(), response.headers[name].encode("latin-1")))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            started = True
            async for chunk in response.aiter_raw(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as error:
        why = upstream.failed(error, want.url)
        if not started:
            return False
        log.warning("%s", why)
        _abort()
        return True
    await send({"type": "http.response.body", "body": b""})
    return True


def _of_size(response: httpx.Response, size: int | None) -> bool:
    """Whether a range answer names the size of the whole file the page announced (an
    upstream whose file is another one than its page says gets no part of it relayed)."""
    total = response.headers.get("content-range", "").rpartition("/")[2].strip()
    return size is None or total == str(size)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as [start, end); None when it cannot be satisfied. Several ranges
    or another unit are answered with the whole file ((0, size)), as RFC 9110 allows."""
    match = _RANGE.match(value)
    if match is None:
        return (0, size)
    first, last = match.groups()
    if not first and not last:
        return (0, size)
    if not first:
        suffix = int(last)
        return (max(0, size - suffix), size) if suffix > 0 and size > 0 else None
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return None
    return (start, end)


async def _start(send: Send, want: Wanted, length: str | None) -> bool:
    headers = [
        (b"content-type", want.content_type),
        (b"etag", f'"{want.sha256}"'.encode()),
        (b"cache-control", b"public, max-age=31536000, immutable"),
    ]
    if length is not None and length.isdigit():
        headers.append((b"content-length", length.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    return True


def _abort() -> None:
    """Close the client's connection short of the answer: its download fails (no ASGI message
    says "abort"; a return would let the server end a chunked answer as if it were complete)."""
    connection = current_connection.get()
    if connection is not None:
        connection.close_now()


async def _empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """An answer without a body (a HEAD's keeps the length a GET would have)."""
    if status != 304 and all(key != b"content-length" for key, _ in headers):
        headers = [*headers, (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
