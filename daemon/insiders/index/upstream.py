"""The fallback to an upstream index for projects this index does not host.

`redirect` sends the client to the upstream page; `proxy` fetches it (PEP 691 JSON preferred, HTML
understood), keeps it for a while, renders it in the format the client asked for, and keeps serving
the last good copy, from memory or from the cache directory, while the upstream is down. `cache`
keeps its pages as `proxy` does, and its files too (insiders.index.upstreamfiles).

Anyone who may read picks the names asked for upstream, so every cache here is bounded by bytes
(`pagecache`), a name the upstream does not know is remembered only briefly and never written,
and redirect mode, which needs only to know whether a name exists, keeps no page.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from insiders.config import Settings, UpstreamMode
from insiders.documents.model import ProjectPage
from insiders.documents.parse import parse_html_page, parse_json_page
from insiders.errors import UpstreamError, UpstreamLoop
from insiders.names import NormalizedName

from .pagecache import LRU, DiskPages

log = logging.getLogger(__name__)

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.1"
)


# Upstream pages kept in memory, parsed, by an estimate of what they weigh there (one can be
# several MB); the least recently used go first. Proxy mode reads one back from its disk copy
# (fresh within the TTL, else when the upstream is down) before it asks the upstream again.
MEMORY_BYTES = 32 << 20
# A parsed page weighs about three times the JSON it came as (measured on a 3,000-file page:
# 574 kB of JSON, 1.77 MB of objects).
PARSED_FACTOR = 3
K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> None:
    """Insert as the newest entry, dropping the oldest beyond `limit` (dicts keep order)."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > limit:
        del cache[next(iter(cache))]


def pip_index_url() -> str | None:
    """The index this machine's pip uses: its configuration (files, PIP_INDEX_URL), else its own.

    pip's own code is the only faithful reader of pip's configuration, so it is asked directly.
    """
    try:
        from pip._internal.configuration import Configuration
        from pip._internal.exceptions import ConfigurationError
        from pip._internal.models.index import PyPI
    except ImportError:
        return None
    configuration = Configuration(isolated=False)
    try:
        configuration.load()
    except ConfigurationError as error:
        log.warning("cannot read pip's configuration: %s", error)
        return str(PyPI.simple_url)
    for key in (":env:.index-url", "install.index-url", "global.index-url"):
        try:
            value = configuration.get_value(key)
        except ConfigurationError:
            continue
        if isinstance(value, str) and value.strip():
            return value.strip().split()[0]
    return str(PyPI.simple_url)


def _is_loopback_or_any(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def points_at(url: str, host: str, port: int) -> bool:
    """Does `url` name the index served on host:port? (A loop, which must never be the upstream.)"""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    url_port = parts.port or (443 if parts.scheme == "https" else 80)
    if url_port != port:
        return False
    if parts.hostname == host:
        return True
    return _is_loopback_or_any(parts.hostname) and _is_loopback_or_any(host)


def choose_upstream(configured: str | None, host: str, port: int) -> str | None:
    """The upstream URL to use. A configured loop is an error; a loop in pip's setup is skipped."""
    if configured:
        if points_at(configured, host, port):
            raise UpstreamLoop(
                f"upstream.url {configured} is this index itself ({host}:{port}); "
                "set upstream.url to another index or upstream.mode to none"
            )
        return configured
    url = pip_index_url()
    if url and points_at(url, host, port):
        # The README tells users to point pip at us; then pip's own default is the upstream.
        from pip._internal.models.index import PyPI

        url = str(PyPI.simple_url)
    return url


# -- the fallback ------------------------------------------------------------------------------


class _Cached(msgspec.Struct):
    fetched: float  # time.time()
    page: ProjectPage | None  # None: the upstream has no such project


_encode = msgspec.json.Encoder().encode
_decode_cached = msgspec.json.Decoder(_Cached).decode
# What an answer "the upstream has no such project" weighs in the memory cache.
_NEGATIVE_WEIGHT = 256
# The upstream's answers to "is there such a project?" (redirect mode's 404 page): one is small.
KNOWN_NAMES = 4096
# After the upstream could not be reached, pages are served from their copies and the rest fails
# at once for this long, naming the failure: a hung upstream must not cost every request of an
# offline install the whole timeout.
DOWN_FOR = 10.0
T = TypeVar("T")
_GONE = object()


class Upstream:
    """The upstream index, asked at most once at a time per name, its answers kept: pages for
    `ttl` seconds, "no such project" for `negative_ttl`; proxy mode's pages also on disk, at most
    `cache_size` bytes, for when the upstream is down. Redirect mode keeps no page: it needs to
    know only whether a name exists there."""

    def __init__(
        self,
        url: str | None,
        mode: UpstreamMode,
        *,
        ttl: float,
        timeout: float,
        cache_dir: Path,
        negative_ttl: float = 60.0,
        cache_size: int = 256 << 20,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/" if url else None
        self.mode: UpstreamMode = mode if url else "none"
        self._ttl, self._negative_ttl = ttl, negative_ttl
        self._disk = DiskPages(cache_dir / "upstream", cache_size)
        # No transport of our own: httpx then honours HTTPS_PROXY and the like (trust_env).
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        # Cache mode fetches the files through the same client (its timeout, its connections).
        self.client = self._client
        self._memory: LRU[NormalizedName, _Cached] = LRU(MEMORY_BYTES)
        # When each page the index last served was fetched: what a rendering of it is checked
        # against, without the parsed page (which the memory above may have let go).
        self._fetched: LRU[NormalizedName, float] = LRU(KNOWN_NAMES)
        self._exists: LRU[NormalizedName, tuple[float, bool]] = LRU(KNOWN_NAMES)
        self._in_flight: dict[tuple[str, NormalizedName], trio.Event] = {}
        # Disk copies to write (None: to drop), oldest first, by the one writer task (`_write`):
        # a page goes to its client without waiting for its copy (an installer asks for its
        # pages one after another), and a name's copies are written in the order fetched.
        self._unwritten: dict[NormalizedName, _Cached | None] = {}
        self._writing = False
        self._down: tuple[float, str] | None = None  # (until, trio clock; why)
        self._answered_at = -float("inf")  # trio clock

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """A reload's [upstream], its url already chosen (never this index: see app.resolve_
        upstream). Another url or mode forgets every answer of the old one; the pages on disk stay
        for stale-if-error, as after a restart."""
        settings = new.upstream
        url = settings.url.rstrip("/") + "/" if settings.url else None
        mode: UpstreamMode = settings.mode if url else "none"
        if (url, mode) != (self.url, self.mode):
            self.url, self.mode = url, mode
            self._memory.clear()
            self._exists.clear()
            self._down = None
        self._ttl, self._negative_ttl = settings.cache_ttl, settings.negative_ttl
        self._disk.limit = settings.cache_size
        self._client.timeout = httpx.Timeout(settings.timeout)
        return ()

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def keeps_pages(self) -> bool:
        """Whether pages are fetched, served and kept on disk (proxy and cache modes)."""
        return self.mode in ("proxy", "cache")

    def redirect_url(self, name: NormalizedName) -> str:
        assert self.url is not None
        return f"{self.url}{name}/"

    def _fresh(self, fetched: float, known: bool) -> bool:
        return time.time() - fetched < (self._ttl if known else self._negative_ttl)

    def _fresh_page(self, name: NormalizedName) -> _Cached | None:
        cached = self._memory.get(name)
        if cached is None or not self._fresh(cached.fetched, cached.page is not None):
            return None
        if cached.page is not None and self.keeps_pages:
            self._disk.touch(name)
        return cached

    def _fresh_answer(self, name: NormalizedName) -> tuple[float, bool] | None:
        answer = self._exists.get(name)
        return answer if answer and self._fresh(*answer) else None

    def down(self) -> str | None:
        """Why the upstream is not asked right now (it failed to answer lately), or None."""
        if self._down is None or trio.current_time() >= self._down[0]:
            return None
        return self._down[1]

    def answered(self) -> None:
        """Note that the upstream just answered a request (its status line came)."""
        self._answered_at = trio.current_time()

    def failed(self, error: httpx.HTTPError, url: str) -> str:
        """Record a failure to reach the upstream, the message for the client. An upstream that
        cannot be reached (connection refused, no such host, no connection in time) is down: the
        next requests do not wait for it; so is one that answered nothing for as long as this
        request waited (a hung host). One request that times out while others are answered (a
        stalled connection, a proxy's hiccup), or a connection dropped once, fails only itself:
        taking the upstream as down then failed every other request of an install for 10 s."""
        why = f"upstream {url} failed: {str(error) or type(error).__name__}"
        silent = trio.current_time() - self._answered_at >= (self._client.timeout.read or 0.0)
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout) or (
            isinstance(error, httpx.TimeoutException) and silent
        ):
            self._down = (trio.current_time() + DOWN_FOR, why)
        return why

    async def _once(
        self,
        key: tuple[str, NormalizedName],
        lookup: Callable[[], T | None],
        fetch: Callable[[], Awaitable[T]],
    ) -> T:
        """What `lookup` has, else `fetch`: one fetch per key at a time, concurrent misses wait
        for it instead of piling on."""
        while (found := lookup()) is None and (event := self._in_flight.get(key)) is not None:
            await event.wait()
        if found is not None:
            return found
        self._in_flight[key] = event = trio.Event()
        try:
            return await fetch()
        finally:
            del self._in_flight[key]
            event.set()

    async def page(self, name: NormalizedName) -> ProjectPage | None:
        """The upstream's page for `name` (None if it has none), fresh within the TTL."""
        return (await self.fetched_page(name))[0]

    async def fetched_page(self, name: NormalizedName) -> tuple[ProjectPage | None, float]:
        """`page(name)` and when it was fetched (a copy served while the upstream is down keeps
        its own time): a rendering of the same fetch is the same page."""
        cached = await self._once(
            ("page", name), lambda: self._fresh_page(name), partial(self._refresh, name)
        )
        if cached.page is not None:
            self._fetched.put(name, cached.fetched, 1)
        else:
            self._fetched.discard(name)
        return cached.page, cached.fetched

    def fresh_fetch(self, name: NormalizedName) -> float | None:
        """When the page of `name` last served was fetched, if it is still fresh: its rendering
        can be served again without the page itself (parsed again from disk, a large page costs
        more than its rendering's bytes)."""
        fetched = self._fetched.get(name)
        if fetched is None or not self._fresh(fetched, True):
            return None
        if self.keeps_pages:
            self._disk.touch(name)
        return fetched

    async def exists(self, name: NormalizedName) -> bool:
        """Whether the upstream has a project `name`. Proxy mode asks for its page (it will be
        served); redirect mode asks for the status only, and keeps nothing but the answer."""
        if self.keeps_pages:
            return await self.page(name) is not None
        answer = await self._once(
            ("exists", name), lambda: self._fresh_answer(name), partial(self._ask, name)
        )
        return answer[1]

    async def _ask(self, name: NormalizedName) -> tuple[float, bool]:
        url = self.redirect_url(name)
        try:
            async with self._client.stream("GET", url, headers={"Accept": ACCEPT}) as response:
                self.answered()
                if response.status_code != 404:
                    response.raise_for_status()
                answer = (time.time(), response.status_code != 404)
        except httpx.HTTPError as error:
            raise UpstreamError(f"upstream {url} failed: {error}") from None
        self._exists.put(name, answer, 1)
        return answer

    async def _refresh(self, name: NormalizedName) -> _Cached:
        # A copy on disk still fresh (a page the memory let go, or one from before a restart).
        copy = await self._load(name) if self.keeps_pages and self._may_have(name) else None
        if copy is not None and copy.page is not None and self._fresh(copy.fetched, True):
            self._memory.put(name, copy, _weight(copy))
            return copy
        url = self.redirect_url(name)
        try:
            if (down := self.down()) is not None:
                raise UpstreamError(down)
            response = await self._client.get(url, headers={"Accept": ACCEPT})
            self.answered()
            if response.status_code == 404:
                page = None
            else:
                response.raise_for_status()
                page = self._parse(response, name)
            self._down = None
        except (httpx.HTTPError, msgspec.DecodeError, ValueError, UpstreamError) as error:
            if isinstance(error, httpx.HTTPError):
                why = self.failed(error, url)
            elif isinstance(error, UpstreamError):
                why = str(error)  # down lately: not asked
            else:
                why = f"upstream {url} failed: {error}"
            stale = self._memory.get(name) or await self._load(name)
            if stale is None:
                raise UpstreamError(why) from None
            log.warning(
                "%s; serving the copy from %s",
                why,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stale.fetched)),
            )
            self._memory.put(name, stale, _weight(stale))
            return stale
        cached = _Cached(time.time(), page)
        weight = PARSED_FACTOR * len(response.content) if page is not None else _NEGATIVE_WEIGHT
        self._memory.put(name, cached, weight)
        # A name the upstream does not know leaves nothing on disk (and an old copy goes).
        self._store_later(name, cached if page is not None else None)
        return cached

    @staticmethod
    def _parse(response: httpx.Response, name: NormalizedName) -> ProjectPage:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.endswith("+json") or content_type == "application/json":
            return parse_json_page(response.content, str(response.url), name)
        return parse_html_page(response.content, str(response.url), name)

    def _may_have(self, name: NormalizedName) -> bool:
        """Whether a copy of the page may be on disk (or on its way there): False only when
        the disk cache's index, already read, says there is none (no thread trip then)."""
        return name in self._unwritten or self._disk.holds(name) is not False

    def _store_later(self, name: NormalizedName, cached: _Cached | None) -> None:
        """Keep the disk copy of a page (None: drop it) soon, after the answer; redirect mode
        keeps none."""
        if not self.keeps_pages:
            return
        self._unwritten.pop(name, None)
        self._unwritten[name] = cached
        if not self._writing:
            self._writing = True
            trio.lowlevel.spawn_system_task(self._write, name="upstream page copies")

    async def _write(self) -> None:
        """Write the copies `_store_later` was given, one at a time, until there are none."""
        try:
            while self._unwritten:
                name = next(iter(self._unwritten))
                cached = self._unwritten[name]
                try:
                    if cached is None:
                        await trio.to_thread.run_sync(self._disk.drop, name)
                    else:
                        # Encoded in the thread: a large page takes a few ms of CPU.
                        await trio.to_thread.run_sync(self._save, name, cached)
                except OSError as error:
                    log.warning("cannot keep a copy of the upstream page of %s: %s", name, error)
                except Exception:
                    # A system task's failure would end the daemon: a copy is only a help.
                    log.exception("cannot keep a copy of the upstream page of %s", name)
                finally:
                    # Unless a newer one came meanwhile: that one is written next.
                    if self._unwritten.get(name, _GONE) is cached:
                        del self._unwritten[name]
        finally:
            self._writing = False

    def _save(self, name: NormalizedName, cached: _Cached) -> None:
        self._disk.save(name, _encode(cached))

    async def _load(self, name: NormalizedName) -> _Cached | None:
        if name in self._unwritten:  # fetched, its copy not written yet
            return self._unwritten[name]
        try:
            data = await trio.to_thread.run_sync(self._disk.load, name)
            return None if data is None else _decode_cached(data)
        except (OSError, msgspec.DecodeError):
            return None


def _weight(cached: _Cached) -> int:
    """A page's weight when its fetched size is not at hand (a copy read back from disk, whose
    JSON is about the size of the upstream's)."""
    return PARSED_FACTOR * len(_encode(cached)) if cached.page is not None else _NEGATIVE_WEIGHT
