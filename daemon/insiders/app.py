"""The root of the daemon: open the store, start the servers, report readiness, stop gracefully."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from insiders.control import serve_control

from . import __version__
from .config import ConfigError, Directories, Settings
from .index import graceful
from .index.server import IndexApp
from .index.web import create_web_app
from .logs import set_level
from .mirror.restore import RestoreError, restore_into
from .mirror.sync import Mirrors
from .mirror.targets import TargetError, open_target
from .repos import Repos
from .store import Store
from .systemd import Notifier, keep_watchdog, listen_fds
from .tokens import Tokens
from .upstream import Upstream, UpstreamLoop, choose_upstream
from .watcher.watcher import Watcher

log = logging.getLogger(__name__)

STATUS_EVERY = 30.0


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
        load: Callable[[], Settings],
        store: Store,
        tokens: Tokens,
        upstream: Upstream,
        repos: Repos,
    ) -> None:
        self.settings = settings
        self.dirs = dirs
        self.load = load
        self.store = store
        self.tokens = tokens
        self.upstream = upstream
        self.started = trio.current_time()
        self.http_urls: list[str] = []
        self.repos = repos
        self.watcher = Watcher(
            repos=repos,
            store=store,
            settings=settings,
            cache_dir=dirs.cache,
            logs_dir=dirs.data / "logs",
            credentials=dirs.credentials,
            index_url=self.own_index_url,
        )
        self.mirrors = Mirrors(settings.mirrors, store, dirs.credentials)
        self.index = IndexApp(
            store=store,
            tokens=tokens,
            upstream=upstream,
            settings=settings,
            fallback=create_web_app(store, describe_upstream(upstream)),  # type: ignore[arg-type]
        )

    def own_index_url(self) -> str | None:
        """This index's /simple/ URL, for builds to resolve their build dependencies through."""
        if not self.http_urls:
            return None
        url = self.http_urls[0]
        for unspecified, loopback in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
            url = url.replace(unspecified, loopback)
        return f"{url}/simple/"

    async def reload(self) -> None:
        """Re-read the config file (and the flags); a bad file is refused and the running settings
        stay."""
        try:
            new = await trio.to_thread.run_sync(self.load)
            upstream = make_upstream(new, self.dirs)
        except (ConfigError, UpstreamLoop) as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return
        if (new.server, new.paths) != (self.settings.server, self.settings.paths):
            log.warning("reload: [server] and [paths] changes take effect at the next restart")
        if new.mirrors != self.settings.mirrors:
            log.warning("reload: [mirrors] changes take effect at the next restart")
        old_upstream = self.upstream
        self.settings = self.index.settings = self.watcher.settings = new
        self.upstream = self.index.upstream = upstream
        set_level(new.log_level)
        await old_upstream.aclose()
        log.info("configuration reloaded")

    def status_line(self) -> str:
        """What `systemctl status` shows: one line a person can read."""
        projects = len(self.store.projects)
        parts = [f"serving {projects} project{'s' * (projects != 1)} on {' '.join(self.http_urls)}"]
        repos = len(self.repos.all())
        if repos:
            parts.append(f"watching {repos} repo{'s' * (repos != 1)}")
            info = self.watcher.info()
            if info.state == "paused":
                parts.append("watcher paused")
            elif info.next_check is not None:
                minutes = max(0, round((info.next_check - time.time()) / 60))
                parts.append(f"next check in {minutes}m")
        return "; ".join(parts)


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


async def keep_status(daemon: Daemon, notifier: Notifier) -> None:
    """Refresh the STATUS= line now and then: counts and the next check change on their own."""
    while True:
        await trio.sleep(STATUS_EVERY)
        notifier.status(daemon.status_line())


async def restore_from(name: str, settings: Settings, dirs: Directories, store: Store) -> None:
    """Fill the empty store from the mirror target `name` before anything is served."""
    try:
        target = await trio.to_thread.run_sync(
            open_target, name, settings.mirrors[name], dirs.credentials
        )
        try:
            log.info("restoring the store from mirror %s (%s)", name, target.location)
            projects, files = await restore_into(store, target)
        finally:
            target.close()
    except TargetError as error:
        raise RestoreError(f"mirror {name}: {error}") from error
    log.info("restored %d projects (%d files) from mirror %s", projects, files, name)


async def run(
    settings: Settings,
    dirs: Directories,
    load: Callable[[], Settings],
    restore: str | None = None,
) -> None:
    notifier = Notifier()
    inherited = listen_fds()
    graceful.install()
    upstream = make_upstream(settings, dirs)
    for directory in (dirs.data, dirs.cache):
        directory.mkdir(parents=True, exist_ok=True)
    store = await trio.to_thread.run_sync(Store.open, dirs.data)
    tokens = await trio.to_thread.run_sync(Tokens.open, dirs.data)
    repos = await trio.to_thread.run_sync(Repos.open, dirs.data)
    if restore is not None:
        await restore_from(restore, settings, dirs, store)
    log.info("store %s: %d projects, %d files", dirs.data, len(store.projects), store.file_count())
    daemon = Daemon(settings, dirs, load, store, tokens, upstream, repos)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(keep_watchdog, notifier)
            # Before HTTP: a second daemon then says "already running, pid N", not "port in use".
            control_sock = inherited.get("control", [None])[0]
            await nursery.start(partial(serve_control, daemon, sock=control_sock))
            http_config = hypercorn_config(settings)
            if "http" in inherited:
                # Socket activation: serve on systemd's sockets; hypercorn owns the fds from here.
                http_config.bind = [f"fd://{sock.detach()}" for sock in inherited["http"]]
            stop_http = trio.Event()
            http_done = trio.Event()

            async def serve_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
                try:
                    await hypercorn.trio.serve(
                        daemon.index,  # type: ignore[arg-type]  # hypercorn's typed ASGI protocol
                        http_config,
                        shutdown_trigger=stop_http.wait,
                        task_status=task_status,
                    )
                finally:
                    http_done.set()

            daemon.http_urls = await nursery.start(serve_http)
            await nursery.start(daemon.watcher.run)
            await nursery.start(daemon.mirrors.run)
            log.info(
                "insiders %s serving on %s; upstream: %s",
                __version__,
                " ".join(daemon.http_urls),
                describe_upstream(daemon.upstream),
            )
            # Ready only now: the store, the control socket and the HTTP listener are all up.
            notifier.ready(daemon.status_line())
            nursery.start_soon(keep_status, daemon, notifier)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    notifier.reloading()
                    await daemon.reload()
                    # READY=1 also after a refused reload, or `systemctl reload` waits forever.
                    notifier.ready(daemon.status_line())
                    continue
                log.info("%s: stopping", signal.Signals(signum).name)
                notifier.stopping()
                break
            # No new connections; requests in flight get the grace time, then everything stops.
            stop_http.set()
            with trio.move_on_after(settings.server.graceful_timeout + 1):
                await http_done.wait()
            nursery.cancel_scope.cancel()
    await daemon.upstream.aclose()
    daemon.mirrors.close()
    log.info("stopped")
