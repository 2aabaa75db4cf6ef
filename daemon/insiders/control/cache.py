"""`insidersctl cache`: what cache mode's file cache holds, dropping some, fetching ahead."""

from __future__ import annotations

import logging
import time

import trio

from insiders.errors import ControlRefused
from insiders.index.filecache import FileCache
from insiders.index.prefetch import prefetch
from insiders.index.upstream import Upstream
from insiders.index.upstreamfiles import UpstreamFiles
from insiders.names import normalize
from insiders.structs import copied
from insidersctl import protocol as p

log = logging.getLogger(__name__)


async def cache_report(cache: FileCache, upstream: Upstream) -> p.CacheReport:
    usage = await trio.to_thread.run_sync(cache.usage)
    return copied(
        p.CacheReport,
        usage,
        mode=upstream.mode,
        upstream=upstream.url,
        directory=str(cache.directory),
        now=time.time(),
    )


async def prune(cache: FileCache, request: p.PruneCache) -> p.CachePruned:
    before = None if request.older_than is None else time.time() - request.older_than
    names = frozenset(normalize(name) for name in request.names)
    dropped = await trio.to_thread.run_sync(lambda: cache.prune(used_before=before, names=names))
    if dropped.files:
        log.info("cache prune: %d files, %d bytes dropped", dropped.files, dropped.size)
    return p.CachePruned(files=dropped.files, size=dropped.size)


async def fetch(files: UpstreamFiles, upstream: Upstream, request: p.FetchCache) -> p.CacheFetched:
    if upstream.mode != "cache":
        raise ControlRefused(
            p.REFUSED, f'upstream mode is {upstream.mode}: set [upstream] mode = "cache" first'
        )
    done = await prefetch(files, upstream, list(request.requirements), frozenset(request.platforms))
    log.info(
        "cache fetch: %d files fetched (%d bytes), %d there already, %d failures",
        done.fetched,
        done.size,
        done.cached,
        len(done.failures),
    )
    return p.CacheFetched(
        fetched=done.fetched, cached=done.cached, size=done.size, failures=tuple(done.failures)
    )
