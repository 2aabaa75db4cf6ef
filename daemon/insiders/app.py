"""The root of the daemon: open the store, start the servers, report readiness, stop gracefully."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import msgspec
import trio

from insiders.config import Reconfigurable, changed_keys
from insiders.errors import ConfigError, RestoreError, TargetError, UpstreamLoop
from insiders.index.upstream import Upstream, choose_upstream
from insiders.repos.registry import Repos
from insidersctl.paths import SOCKET_NAME

from . import __version__
from .config import Directories, ServerSettings, Settings
from .control.commands import Commands, Parts, log_location
from .control.server import serve_control
from .credentials import read_secret
from .fsutil import make_private
from .http import graceful, reason, tls
from .http.access import AuthRequest, exposure_refusal
from .http.bodies import RequestBodies
from .http.connections import connection_limit, raise_descriptor_limit, serve_http
from .http.origin import BrowserGuard, own_names
from .http.public_url import public_base_url
from .http.routes import Router
from .index import ui
from .index.filecache import FileCache
from .index.hooks import Hooks
from .index.server import IndexApp
from .index.ui.views import Site
from .index.upstreamfiles import UpstreamFiles
from .index.web import create_web_app
from .logfile import LOG_FILE
from .logs import set_level, stderr_is_journal
from .mirror.restore import check_unfinished, restore_into
from .mirror.sync import Mirrors
from .mirror.targets import open_target
from .store import Store
from .systemd import Notifier, keep_watchdog, listen_fds
from .tokens import USE_SAVE_INTERVAL, Tokens
from .watcher.watcher import Watcher

log = logging.getLogger(__name__)

STATUS_EVERY = 30.0
# Cache mode's files, under the cache directory; one FileCache for the daemon's life (its order of
# use and its counts outlive a reload, which changes only its size).
FILES_DIR = "upstream-files"


def resolve_upstream(settings: Settings, running: ServerSettings | None = None) -> Settings:
    """`settings` with upstream.url the index to fall back to, never this one: compared with the
    address the index runs on (`running`: a reload's [server] takes effect at restart only), else
    the settings'. Without upstream.url, pip's index (which may ask pip: call it in a thread)."""
    server = running or settings.server
    url = choose_upstream(settings.upstream.url, server.host, server.port)
    if url is None and settings.upstream.mode != "none":
        log.warning("no upstream index: set upstream.url (pip is not installed to ask)")
    return msgspec.structs.replace(
        settings, upstream=msgspec.structs.replace(settings.upstream, url=url)
    )


def make_upstream(settings: Settings, dirs: Directories) -> Upstream:
    """The upstream of resolved `settings` (resolve_upstream); a reload reconfigures it."""
    return Upstream(
        settings.upstream.url,
        settings.upstream.mode,
        ttl=settings.upstream.cache_ttl,
        timeout=settings.upstream.timeout,
        cache_dir=dirs.cache,
        negative_ttl=settings.upstream.negative_ttl,
        cache_size=settings.upstream.cache_size,
    )


def file_cache(settings: Settings, dirs: Directories, store: Store) -> FileCache:
    """Cache mode's files: private in the cache directory, or where the config says, for nginx
    to read (the front's X-Accel-Redirect). A name that becomes hosted loses its cached files."""
    shared = settings.upstream.file_cache_directory
    directory = Path(shared) if shared else dirs.cache / FILES_DIR
    cache = FileCache(directory, settings.upstream.file_cache_size, shared=shared is not None)
    store.subscribe(lambda name: cache.drop_later(name) if store.get(name) else None)
    return cache


async def _private_directories(dirs: Directories) -> None:
    """The data and cache directories, there and the daemon's alone: what an earlier version (or
    another umask) left readable to others is restricted."""
    for directory in (dirs.data, dirs.cache):
        await trio.Path(directory).mkdir(parents=True, exist_ok=True)
        if changed := await trio.to_thread.run_sync(make_private, directory):
            log.info("%s: %d files and directories made private (0600, 0700)", directory, changed)


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
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        # What the listeners and directories were made from: a reload cannot change those.
        self.started_settings = settings
        # The keys of the last reload that wait for a restart, as its parts named them.
        self.restart_needed: tuple[str, ...] = ()
        # Why the last reload kept the running TLS certificate (None: loaded, or no TLS).
        self.certificate_error: str | None = None
        self.dirs = dirs
        self.load = load
        self.store = store
        self.tokens = tokens
        self.upstream = upstream
        self.started = trio.current_time()
        self._reloading = trio.Lock()
        self.http_urls: list[str] = []
        # With TLS: a plain-HTTP loopback listener for the daemon's own builds (see run).
        self.builds_url: str | None = None
        # The TLS listener's config, whose certificate a reload loads again (None: plain HTTP).
        self.tls_config: tls.ReloadableTLSConfig | None = None
        self.repos = repos
        self.watcher = self._watcher()
        public = settings.server.public_url
        self.mirrors = Mirrors(settings.mirrors, store, dirs.credentials, public)
        self.file_cache = file_cache(settings, dirs, store)
        self.hooks = Hooks(
            repos=repos.all,
            trigger=self.watcher.push,
            secret=self.webhook_secret,
            github_url=settings.watcher.github_url,
        )
        self.index = self._index()
        # What a reload reaches, each part taking its new settings (config.Reconfigurable).
        self.parts: tuple[Reconfigurable, ...] = (
            self,
            upstream,
            self.index,
            self.file_cache,
            self.hooks,
            self.watcher,
            self.mirrors,
        )
        self.http_app = BrowserGuard(
            Router(self.http_parts(), tokens, settings.server.read_access),
            names=own_names(settings.server.allowed_hosts, settings.server.host),
            public_url=self.public_url,
        )

    def _index(self) -> IndexApp:
        """The index's own answers: /simple/, files and uploads."""
        return IndexApp(
            store=self.store,
            tokens=self.tokens,
            upstream=self.upstream,
            settings=self.settings,
            upstream_files=UpstreamFiles(self.file_cache),
            withheld=self.mirrors.withheld,
        )

    def http_parts(self) -> dict[str, object]:
        """The parts whose methods the route table (insiders.http.routes) names as handlers:
        "index.simple" is self.index.simple. The gates in front, the browser's rules (Host,
        Origin) then the read gate, are made at start: [server] changes wait for a restart."""
        store, dirs = self.store, self.dirs
        web = create_web_app(store, self.public_url)
        pages = ui.WebPages(store, self.repos, dirs.data / "logs", self.site, self.upstream)
        pages.path_cuts = ui.server_paths(dirs.data, dirs.cache)  # hidden from build logs
        security = ui.security_headers(self.settings.server.image_sources)
        ui.register_not_found(web, pages, security)
        return {
            "index": self.index,
            "hooks": self.hooks,
            "auth": AuthRequest(self.tokens, self.settings.server.read_access),
            "site": ui.WebApp(pages, security),
            "web": web,  # Quart's app: the JSON API, lifespan, and whatever no route names
        }

    def _watcher(self) -> Watcher:
        dirs = self.dirs
        return Watcher(
            repos=self.repos,
            store=self.store,
            settings=self.settings,
            cache_dir=dirs.cache,
            logs_dir=dirs.data / "logs",
            credentials=dirs.credentials,
            index_access=self.build_index,
            # Absent from a build's sandbox, whatever it binds.
            hidden=(dirs.data, dirs.cache, dirs.runtime, *filter(None, [dirs.credentials])),
        )

    def public_url(self) -> str:
        """The URL clients reach the index at (server.public-url, else where it listens)."""
        server = self.settings.server
        return public_base_url(
            server.public_url, self.http_urls, f"http://{_bracket(server.host)}:{server.port}"
        )

    def site(self) -> Site:
        """What the web pages say about this index; it changes only with a reload."""
        return Site(
            base_url=self.public_url(),
            version=__version__,
            upstream_mode=self.upstream.mode,
            upstream_url=self.upstream.url,
            upstream_ttl=self.settings.upstream.cache_ttl,
            read_access=self.settings.server.read_access,
            image_sources=tuple(self.settings.server.image_sources),
        )

    async def webhook_secret(self) -> str | None:
        setting = self.settings.watcher.webhook_secret_file
        return await trio.to_thread.run_sync(
            read_secret, "webhook-secret", setting, self.dirs.credentials
        )

    @contextlib.contextmanager
    def build_index(self, borrower: str) -> Iterator[str | None]:
        """This index's /simple/ URL for one build to resolve its build dependencies through,
        with a read token of its own when reads need one (revoked when the block ends)."""
        if not self.http_urls:
            yield None
            return
        url = self.builds_url or self.http_urls[0]
        for unspecified, loopback in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
            url = url.replace(unspecified, loopback)
        if self.settings.server.read_access != "token":
            yield f"{url}/simple/"
            return
        with self.tokens.lend(borrower) as secret:
            # pip and uv keep a URL's password out of their logs ("****"), and the build log is
            # redacted of it anyway.
            yield f"{url.replace('://', f'://__token__:{secret}@', 1)}/simple/"

    async def reload_now(self) -> str | None:
        """A reload as systemd sees it (RELOADING=1, the new settings, READY=1), from SIGHUP or
        `insidersctl reload`. None when the new settings are in force, else why they were refused.
        """
        async with self._reloading:
            self.notifier.reloading()
            try:
                refused = await self.reload()
                if self.tls_config is not None:
                    # A renewed certificate, also when the config file did not change.
                    self.certificate_error = await reload_certificate(self.tls_config)
                return refused
            finally:
                # READY=1 also after a refused reload, or `systemctl reload` waits forever.
                self.notifier.ready(self.status_line())

    def _load(self) -> Settings:
        return resolve_upstream(self.load(), running=self.started_settings.server)

    async def reload(self) -> str | None:
        """Re-read the config file (and the flags); a bad file is refused and the running settings
        stay. None when applied, else the reason it was refused."""
        try:
            # Both read files, and choosing the upstream may ask pip (an import): in a thread.
            new = await trio.to_thread.run_sync(self._load)
        except (ConfigError, UpstreamLoop) as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return str(error)
        # Each part takes what it can change while running and names what waits for a restart.
        self.restart_needed = tuple(key for part in self.parts for key in part.reconfigure(new))
        if self.restart_needed:
            log.warning(
                "reload: %s changed, takes effect at restart", ", ".join(self.restart_needed)
            )
        log.info("configuration reloaded")
        return None

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """The daemon's own part of a reload: the log level applies at once; listeners and
        directories ([server], [paths]) are made at start, so their changes wait for a restart."""
        self.settings = new
        set_level(new.log_level)
        started = self.started_settings
        return (
            *changed_keys("server", started.server, new.server),
            *changed_keys("paths", started.paths, new.paths),
        )

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
        refused = [m for m in self.mirrors.infos() if m.state == "refused"]
        if refused:
            names = ", ".join(m.name for m in refused)
            withheld = sum(m.withheld for m in refused)
            held = f", {withheld} of its projects kept from the upstream (503)" if withheld else ""
            parts.append(f"mirror {names} refused{held}: see insidersctl mirrors list")
        return "; ".join(parts)


def hypercorn_config(settings: Settings) -> tls.ReloadableTLSConfig:
    config = tls.ReloadableTLSConfig()
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


async def keep_token_use(tokens: Tokens) -> None:
    """Write the tokens' last use now and then (every request records it in memory)."""
    try:
        while True:
            await trio.sleep(USE_SAVE_INTERVAL / 4)
            if tokens.use_pending():
                await trio.to_thread.run_sync(tokens.save_use)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(tokens.save_use)


def check_exposure(settings: Settings, inherited: list[socket.socket]) -> None:
    """Refuse to start when everyone beyond loopback could read, unless that is said out loud."""
    hosts = [
        str(s.getsockname()[0]) for s in inherited if s.family in (socket.AF_INET, socket.AF_INET6)
    ]
    refusal = exposure_refusal(
        hosts if inherited else [settings.server.host],
        settings.server.read_access,
        settings.server.public,
    )
    if refusal is not None:
        raise ConfigError(refusal)


async def reload_certificate(config: tls.ReloadableTLSConfig) -> str | None:
    """Load the certificate files again; None when loaded, else why the running one stays."""
    try:
        await trio.to_thread.run_sync(config.reload_certificate)
    except OSError as error:
        log.error("TLS certificate not reloaded, the running one stays: %s", error)
        return str(error)
    return None


async def restore_from(name: str, settings: Settings, dirs: Directories, store: Store) -> None:
    """Fill the empty store from the mirror target `name` before anything is served."""
    try:
        target = await trio.to_thread.run_sync(
            open_target, name, settings.mirrors[name], dirs.credentials
        )
        try:
            log.info("restoring the store from mirror %s (%s)", name, target.location)
            done = await restore_into(store, target, settings.mirrors[name].concurrency)
        finally:
            target.close()
    except TargetError as error:
        raise RestoreError(f"mirror {name}: {error}") from error
    skipped = f"; {len(done.skipped)} skipped (see above)" if done.skipped else ""
    log.info(
        "restored %d projects (%d files) from mirror %s%s", done.projects, done.files, name, skipped
    )


async def open_store(dirs: Directories, restore: str | None) -> Store:
    """The store; refused when a restore was cut short and this start does not finish it: a
    partial store is served, and mirrored, by nobody."""
    if restore is None:
        await trio.to_thread.run_sync(check_unfinished, dirs.data)
    return await trio.to_thread.run_sync(load_store, dirs.data)


def load_store(data: Path) -> Store:
    """`Store.open` with the cyclic garbage collector paused, then the loaded store put out of
    its sight (blocking: call it from a thread).

    A store of a million files is a million `StoredFile`s in per-project tuples, and every full
    collection walks them all: 0.2 s with the event loop stopped, at a time set by allocations
    (an upload into a 20,000-file project made enough to trigger it, tripling its time to page),
    and the collections during the load itself took 1.6 s of its 3.7 s. Nothing there can be part
    of a reference cycle (frozen structs of strings and numbers): `gc.freeze()` moves what is
    alive after the load to the permanent generation, which collections skip; reference counting
    still frees a project's old files when they are replaced.
    """
    gc.disable()
    try:
        store = Store.open(data)
    finally:
        gc.enable()
    gc.freeze()
    return store


async def run(
    settings: Settings,
    dirs: Directories,
    load: Callable[[], Settings],
    on_ready: Callable[[], None] = lambda: None,
    restore: str | None = None,
) -> None:
    """Open the data, serve until SIGTERM or SIGINT (SIGHUP reloads), then stop gracefully."""
    notifier = Notifier()
    inherited = listen_fds()
    check_exposure(settings, inherited.get("http", []))
    graceful.install()
    reason.install()
    settings = await trio.to_thread.run_sync(resolve_upstream, settings)
    upstream = make_upstream(settings, dirs)
    await _private_directories(dirs)
    store = await open_store(dirs, restore)
    tokens = await trio.to_thread.run_sync(Tokens.open, dirs.data)
    repos = await trio.to_thread.run_sync(Repos.open, dirs.data)
    if restore is not None:
        await restore_from(restore, settings, dirs, store)
    log.info("store %s: %d projects, %d files", dirs.data, len(store.projects), store.file_count())
    daemon = Daemon(settings, dirs, load, store, tokens, upstream, repos, notifier)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(keep_watchdog, notifier)
            # Before HTTP: a second daemon then says "already running, pid N", not "port in use".
            await start_control(nursery, daemon, inherited.get("control", [None])[0])
            # Before HTTP: the names a mirror lists and the store lacks never reach the upstream.
            await nursery.start(daemon.mirrors.run)
            stop_http, http_done = await start_http(nursery, daemon, inherited.get("http"))
            await nursery.start(daemon.watcher.run)
            log.info(
                "insiders %s serving on %s; upstream: %s",
                __version__,
                " ".join(daemon.http_urls),
                describe_upstream(daemon.upstream),
            )
            # Ready only now: the store, the control socket and the HTTP listener are all up.
            notifier.ready(daemon.status_line())
            on_ready()
            nursery.start_soon(keep_status, daemon, notifier)
            nursery.start_soon(keep_token_use, tokens)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await daemon.reload_now()
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


async def start_control(
    nursery: trio.Nursery, daemon: Daemon, inherited: socket.socket | None
) -> None:
    """The control socket (systemd's, or bound in the runtime directory) and its handlers."""
    dirs = daemon.dirs
    path = Path(str(inherited.getsockname())) if inherited else dirs.runtime / SOCKET_NAME
    log_file = None if stderr_is_journal() else dirs.data / LOG_FILE
    parts = Parts(
        daemon=daemon,
        store=daemon.store,
        tokens=daemon.tokens,
        repos=daemon.repos,
        watcher=daemon.watcher,
        mirrors=daemon.mirrors,
        data_dir=dirs.data,
        socket_path=path,
        logs=log_location(log_file, builds=dirs.data / "logs"),
        file_cache=daemon.file_cache,
        upstream_files=daemon.index.upstream_files,
    )
    await nursery.start(partial(serve_control, Commands(parts).handle, path=path, sock=inherited))


async def start_http(
    nursery: trio.Nursery, daemon: Daemon, inherited: list[socket.socket] | None
) -> tuple[trio.Event, trio.Event]:
    """The HTTP listeners (systemd's sockets, or bound as configured), TLS when configured.

    Returns the event that stops them and the one set once they are stopped.
    """
    settings = daemon.settings
    http_config = hypercorn_config(settings)
    tls_files = tls.tls_files(settings.server, daemon.dirs.credentials)
    if tls_files is not None:
        tls.enable(http_config, tls_files)
        daemon.tls_config = http_config
        # Builds resolve their build dependencies through this index; their pip would not trust
        # a certificate made for the index's public name, so they get a plain HTTP listener of
        # their own on loopback (behind the same read gate).
        http_config.insecure_bind = ["127.0.0.1:0"]
    if inherited:
        # Socket activation: serve on systemd's sockets; hypercorn owns the fds from here.
        http_config.bind = [f"fd://{sock.detach()}" for sock in inherited]
    stop_http = trio.Event()
    http_done = trio.Event()
    descriptors = raise_descriptor_limit()
    max_connections = connection_limit(descriptors, settings.server.max_connections)
    log.info(
        "serving up to %d HTTP connections (descriptor limit %d)", max_connections, descriptors
    )

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_http(
                RequestBodies(daemon.http_app, timeout=settings.server.body_timeout),
                http_config,
                limit=max_connections,
                shutdown_trigger=stop_http.wait,
                task_status=task_status,
            )
        finally:
            http_done.set()

    urls: list[str] = await nursery.start(serve)
    if tls_files is not None:
        daemon.builds_url = next(u for u in urls if u.startswith("http://"))
        urls = [u for u in urls if u.startswith("https://")]
    daemon.http_urls = urls
    return stop_http, http_done
