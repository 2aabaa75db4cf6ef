"""The root of the daemon: open the store, start the servers, report readiness, stop gracefully."""

from __future__ import annotations

import logging
import signal
from functools import partial
from pathlib import Path

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from . import __version__
from .config import ConfigError, Directories, Settings, load_settings
from .index.server import IndexApp
from .index.web import create_web_app
from .logs import set_level
from .store import Store
from .tokens import Tokens
from .upstream import Upstream, UpstreamLoop, choose_upstream

log = logging.getLogger(__name__)


def make_upstream(settings: Settings, dirs: Directories) -> Upstream:
    server = settings.server
    url = choose_upstream(settings.upstream.url, server.host, server.port)
    if url is None and settings.upstream.mode != "none":
        log.warning("no upstream index: set upstream.url (pip is not installed to ask)")
    return Upstream(
        url,
        settings.upstream.mode,
        ttl=settings.upstream.cache_ttl,
        timeout=settings.upstream.timeout,
        cache_dir=dirs.cache,
    )


def describe_upstream(upstream: Upstream) -> str:
    if upstream.mode == "none" or upstream.url is None:
        return "not found (no upstream)"
    return f"{upstream.mode} to {upstream.url}"


class Daemon:
    """What the running daemon holds; the control plane and the watcher act on it."""

    def __init__(
        self,
        settings: Settings,
        dirs: Directories,
        config_path: Path | None,
        store: Store,
        tokens: Tokens,
        upstream: Upstream,
    ) -> None:
        self.settings = settings
        self.dirs = dirs
        self.config_path = config_path
        self.store = store
        self.tokens = tokens
        self.upstream = upstream
        self.started = trio.current_time()
        self.http_urls: list[str] = []
        self.index = IndexApp(
            store=store,
            tokens=tokens,
            upstream=upstream,
            settings=settings,
            fallback=create_web_app(store, describe_upstream(upstream)),  # type: ignore[arg-type]
        )

    async def reload(self, overrides: Settings | None = None) -> None:
        """Re-read the config file; a bad one is refused and the running settings stay."""
        if self.config_path is None:
            log.info("reload: no config file; nothing to re-read")
            return
        try:
            new = await trio.to_thread.run_sync(
                partial(load_settings, self.config_path, required=False)
            )
            upstream = make_upstream(new, self.dirs)
        except (ConfigError, UpstreamLoop) as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return
        if (new.server, new.paths) != (self.settings.server, self.settings.paths):
            log.warning("reload: [server] and [paths] changes take effect at the next restart")
        old_upstream = self.upstream
        self.settings = self.index.settings = new
        self.upstream = self.index.upstream = upstream
        set_level(new.log_level)
        await old_upstream.aclose()
        log.info("configuration reloaded from %s", self.config_path)


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{_bracket(settings.server.host)}:{settings.server.port}"]
    config.graceful_timeout = settings.server.graceful_timeout
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    # Uploads are streamed and bounded by our own limit, not hypercorn's.
    config.h11_max_incomplete_size = 64 * 1024
    return config


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def run(settings: Settings, dirs: Directories, config_path: Path | None) -> None:
    upstream = make_upstream(settings, dirs)
    for directory in (dirs.data, dirs.cache):
        directory.mkdir(parents=True, exist_ok=True)
    store = await trio.to_thread.run_sync(Store.open, dirs.data)
    tokens = await trio.to_thread.run_sync(Tokens.open, dirs.data)
    log.info("store %s: %d projects, %d files", dirs.data, len(store.projects), store.file_count())
    daemon = Daemon(settings, dirs, config_path, store, tokens, upstream)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            stop_http = trio.Event()
            http_done = trio.Event()

            async def serve_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
                try:
                    await hypercorn.trio.serve(
                        daemon.index,  # type: ignore[arg-type]  # hypercorn's typed ASGI protocol
                        hypercorn_config(settings),
                        shutdown_trigger=stop_http.wait,
                        task_status=task_status,
                    )
                finally:
                    http_done.set()

            daemon.http_urls = await nursery.start(serve_http)
            log.info(
                "insiders %s serving on %s; upstream: %s",
                __version__,
                " ".join(daemon.http_urls),
                describe_upstream(daemon.upstream),
            )
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await daemon.reload()
                    continue
                log.info("%s: stopping", signal.Signals(signum).name)
                break
            # No new connections; requests in flight get the grace time, then everything stops.
            stop_http.set()
            with trio.move_on_after(settings.server.graceful_timeout + 1):
                await http_done.wait()
            nursery.cancel_scope.cancel()
    await daemon.upstream.aclose()
    log.info("stopped")
