"""What each control request does to the running daemon; the socket side is insiders.control.server.

Its replies are built from the daemon's own types by insiders.control.wire. Every expected refusal
(unknown project, bad SPEC, duplicate token...) becomes an `Error` reply with a code and a message
a person can act on; long operations send `Progress` events before their reply.

`Commands` is handed the parts it acts on (app.run wires them); it looks nothing up.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import msgspec
import trio

from insiders import __version__
from insiders.config import Settings
from insiders.errors import (
    ControlRefused,
    InsidersError,
    RepoError,
    SpecError,
    StoreError,
    TargetError,
    TokenError,
    single_error,
)
from insiders.index.filecache import FileCache
from insiders.index.upstream import Upstream
from insiders.index.upstreamfiles import UpstreamFiles
from insiders.logs import stderr_is_journal
from insiders.mirror import claim
from insiders.mirror.sync import Mirrors, MirrorTarget
from insiders.names import is_valid_name, normalize
from insiders.repos.registry import Repo, Repos, make_repo, with_policy
from insiders.repos.source import resolve_dist
from insiders.repos.spec import parse_spec
from insiders.store import Project, Store
from insiders.structs import copied
from insiders.systemd import own_unit
from insiders.tokens import Tokens, utc
from insiders.watcher.report import Outcome, Step, WatcherState
from insidersctl import protocol as p

from . import cache
from .server import SendEvent
from .wire import (
    file_info,
    mirror_wire,
    newest_failure,
    outcome_wire,
    progress_wire,
    project_info,
    repo_info,
    token_info,
    watcher_info_wire,
)

log = logging.getLogger(__name__)


_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PROGRESS_BUFFER = 256


class Watcher(Protocol):
    """What the control plane needs of the watcher; the daemon exposes it as `daemon.watcher`.

    `check` runs a check now and reports through `progress` (which never blocks: events the client
    cannot take fast enough are dropped, the final outcomes never are). It is awaited by the
    control connection, so it is cancelled if that client goes away; a watcher that wants a check
    to finish regardless runs it in its own nursery and waits for the result here.
    """

    def info(self) -> WatcherState: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def schedule(self, repos: Sequence[Repo], *, force: bool, versions: Sequence[str] = ()) -> None:
        """Queue a check of `repos` and return at once (`update --no-wait`)."""

    async def check(
        self,
        repos: Sequence[Repo],
        *,
        force: bool,
        progress: Callable[[Step], None],
        versions: Sequence[str] = (),
    ) -> Sequence[Outcome]: ...


def log_location(
    log_file: Path | None, env: dict[str, str] | None = None, builds: Path | None = None
) -> p.LogsLocation:
    """Where `insidersctl logs` finds this daemon's log: the journal under systemd, else a file;
    and the build logs' directory."""
    environ = os.environ if env is None else env
    build_logs = str(builds) if builds else None
    if not stderr_is_journal():
        return p.LogsLocation(path=str(log_file) if log_file else None, builds=build_logs)
    unit, user = own_unit()
    return p.LogsLocation(
        journal=True,
        unit=unit,
        user=user,
        invocation=environ.get("INVOCATION_ID"),
        builds=build_logs,
    )


class RunningDaemon(Protocol):
    """What the control plane reads of the running daemon, and asks of it (app.Daemon is one)."""

    @property
    def started(self) -> float: ...
    @property
    def http_urls(self) -> list[str]: ...
    @property
    def restart_needed(self) -> tuple[str, ...]: ...
    @property
    def certificate_error(self) -> str | None: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def upstream(self) -> Upstream: ...

    async def reload_now(self) -> str | None:
        """Apply the configuration file again; None when applied, else why it was refused."""


@dataclass(frozen=True)
class Parts:
    """What the handlers act on, each given by app.run."""

    daemon: RunningDaemon
    store: Store
    tokens: Tokens
    repos: Repos
    watcher: Watcher
    mirrors: Mirrors
    data_dir: Path
    socket_path: Path
    logs: p.LogsLocation
    file_cache: FileCache | None = None  # cache mode's files (None: `cache` is unavailable)
    upstream_files: UpstreamFiles | None = None  # and their fetcher


class Commands:
    """The request handlers, acting on the parts they are given."""

    def __init__(self, parts: Parts) -> None:
        self.daemon = parts.daemon
        self.store = parts.store
        self.tokens = parts.tokens
        self.repos = parts.repos
        self.watcher = parts.watcher
        self.mirrors = parts.mirrors
        self.data_dir = parts.data_dir
        self.socket_path = parts.socket_path
        self.logs = parts.logs
        self.file_cache = parts.file_cache
        self.upstream_files = parts.upstream_files
        # Token changes write the token file from a thread: one at a time.
        self._token_lock = trio.Lock()

    async def handle(self, request: p.Request, send: SendEvent) -> p.Reply:
        """The reply to `request`; expected refusals become Error replies."""
        try:
            return await self._dispatch(request, send)
        except (InsidersError, BaseExceptionGroup) as raised:
            # A refusal raised inside a nursery (update's) arrives wrapped in a group.
            error = single_error(raised)
            if isinstance(error, ControlRefused):
                return p.Error(code=error.code, message=str(error))
            if isinstance(error, SpecError | RepoError | StoreError | TokenError):
                return p.Error(code=p.REFUSED, message=str(error))
            raise

    async def _dispatch(self, request: p.Request, send: SendEvent) -> p.Reply:
        """Long because it is the table of requests: one case each, the one-line ones inline."""
        match request:
            case p.Status():
                return self.status()
            case p.ServerStatus():
                return self.server_status()
            case p.ListRepos():
                sandbox = self.watcher.info().sandbox
                return p.RepoList(repos=self._repo_infos(), now=time.time(), sandbox=sandbox)
            case p.AddRepo():
                return await self.add_repo(request)
            case p.SetRepo():
                return await self.set_repo(request)
            case p.RemoveRepo():
                removed = await self.repos.remove(request.name)
                return p.RepoRemoved(repo=self._repo_info(removed))
            case p.Update():
                return await self.update(request, send)
            case p.WatcherControl():
                return self.watcher_control(request)
            case p.Logs():
                return self.logs_location(request)
            case p.Reload():
                refused = await self.daemon.reload_now()
                if refused is not None:
                    raise ControlRefused(
                        p.REFUSED, f"reload refused, the running settings stay: {refused}"
                    )
                return p.Reloaded(
                    restart_needed=self.daemon.restart_needed,
                    certificate_error=self.daemon.certificate_error,
                )
            case p.ListTokens():
                tokens = tuple(token_info(t) for t in self.tokens.all())
                return p.TokenList(tokens=tokens, now=time.time())
            case p.CreateToken():
                return await self.create_token(request)
            case p.RevokeToken():
                async with self._token_lock:
                    await trio.to_thread.run_sync(self.tokens.revoke, request.name)
                log.info("token %s revoked", request.name)
                return p.TokenRevoked(name=request.name)
            case p.ListProjects():
                projects = tuple(
                    project_info(self.store.projects[k]) for k in sorted(self.store.projects)
                )
                return p.ProjectList(projects=projects, now=time.time())
            case p.ShowProject():
                project = self._project(request.name)
                return p.ProjectDetail(
                    name=project.name,
                    files=tuple(file_info(f) for f in project.files),
                    now=time.time(),
                )
            case p.SetProjectStatus():
                return await self.set_project_status(request)
            case p.Yank() | p.Unyank():
                return await self.yank(request)
            case p.Remove():
                return await self.remove(request)
            case p.ListMirrors():
                return p.MirrorList(mirrors=self._mirror_infos(), now=time.time())
            case p.SyncMirror():
                return await self.sync_mirror(request)
            case p.VerifyMirror():
                return await self.verify_mirror(request)
            case p.CacheStatus():
                return await cache.cache_report(self._file_cache(), self.daemon.upstream)
            case p.PruneCache():
                return await cache.prune(self._file_cache(), request)
            case p.FetchCache():
                return await cache.fetch(self._upstream_files(), self.daemon.upstream, request)
        raise ControlRefused(
            p.UNKNOWN_REQUEST, f"this insidersd cannot do {type(request).__name__}"
        )

    def _file_cache(self) -> FileCache:
        if self.file_cache is None:
            raise ControlRefused(p.UNAVAILABLE, "this daemon keeps no upstream files")
        return self.file_cache

    def _upstream_files(self) -> UpstreamFiles:
        if self.upstream_files is None:
            raise ControlRefused(p.UNAVAILABLE, "this daemon keeps no upstream files")
        return self.upstream_files

    # -- status --------------------------------------------------------------------------------

    def status(self) -> p.StatusReport:
        server = self.server_status()
        return p.StatusReport(
            version=__version__,
            pid=os.getpid(),
            now=time.time(),
            socket=str(self.socket_path),
            watcher=self.watcher_info(),
            repos=self._repo_infos(),
            restart_needed=self.daemon.restart_needed,
            mirrors=self._mirror_infos(),
            **msgspec.structs.asdict(server),
        )

    def server_status(self) -> p.ServerReport:
        daemon = self.daemon
        return p.ServerReport(
            index_urls=tuple(daemon.http_urls),
            projects=len(self.store.projects),
            files=self.store.file_count(),
            upstream=self._upstream_url(),
            upstream_mode=daemon.upstream.mode,
            data_dir=str(self.data_dir),
            uptime=trio.current_time() - daemon.started,
        )

    def _upstream_url(self) -> str | None:
        upstream = self.daemon.upstream
        return None if upstream.mode == "none" else upstream.url

    def _repo_infos(self) -> tuple[p.RepoInfo, ...]:
        return tuple(self._repo_info(repo) for repo in self.repos.all())

    def _repo_info(self, repo: Repo) -> p.RepoInfo:
        return repo_info(repo, self.store.removed(repo.key))

    # -- repositories and the watcher ----------------------------------------------------------

    def _check_targets(self, publish_to: Sequence[str]) -> None:
        configured = self.daemon.settings.targets
        for target in publish_to:
            if target not in configured:
                known = ", ".join(sorted(configured)) or "none"
                raise ControlRefused(
                    p.REFUSED,
                    f"--publish-to {target}: no [targets.{target}] in the configuration "
                    f"(configured: {known})",
                )

    def logs_location(self, request: p.Logs) -> p.LogsLocation:
        """Where the logs are; for `logs --build NAME`, the newest version's log when it failed
        ("why did the last build fail?"), which is not the newest build when older versions
        built after it."""
        if request.build is None:
            return self.logs
        try:
            repo = self.repos.find(request.build)
        except RepoError:
            return self.logs  # the client says there is no such log
        failed = newest_failure(repo.state)
        if failed is None:
            return self.logs
        version, record = failed
        said = (
            f"the build of {repo.dist} {version}, the newest version, {record.status} "
            f"({'bytes differ' if record.status == 'refused' else record.message})"
        )
        return msgspec.structs.replace(self.logs, build_log=record.log, build_said=said)

    async def set_repo(self, request: p.SetRepo) -> p.RepoChanged:
        """A new policy without a remove and an add: the record and its history stay."""
        self._check_targets(request.publish_to or ())
        change = partial(
            with_policy,
            versions=request.versions,
            since=request.since,
            publish_to=request.publish_to,
            local=request.local,
        )
        before, after = await self.repos.set_policy(request.name, change)
        changed = tuple(
            name
            for name in ("versions", "since", "publish_to", "local")
            if getattr(before, name) != getattr(after, name)
        )
        if changed:
            log.info("%s: %s changed by insidersctl repos set", after.dist, ", ".join(changed))
        return p.RepoChanged(repo=self._repo_info(after), changed=changed)

    async def add_repo(self, request: p.AddRepo) -> p.RepoAdded:
        parsed = parse_spec(request.spec, request.cwd or None)
        self._check_targets(request.publish_to)
        dist = await trio.to_thread.run_sync(resolve_dist, parsed, request.spec)
        repo = make_repo(
            parsed,
            dist,
            versions=request.versions,
            since=request.since,
            publish_to=request.publish_to,
            local=request.local,
        )
        await self.repos.add(repo)
        log.info("watching %s for %s (%s)", repo.source.location, repo.dist, repo.versions)
        # Its first check now, not at the next periodic one (a paused watcher checks on request).
        checking = self.watcher.info().state == "running"
        if checking:
            self.watcher.schedule([repo], force=False)
        # watcher=True for clients that still ask (the field's default is False).
        return p.RepoAdded(repo=self._repo_info(repo), checking=checking)

    def watcher_info(self) -> p.WatcherInfo:
        return watcher_info_wire(self.watcher.info())

    def watcher_control(self, request: p.WatcherControl) -> p.WatcherReport:
        watcher = self.watcher
        if request.action != "status":
            if request.action == "start":
                watcher.resume()
            else:
                watcher.pause()
            log.info(
                "watcher %s by insidersctl", "resumed" if request.action == "start" else "paused"
            )
        return p.WatcherReport(watcher=self.watcher_info(), now=time.time())

    async def update(self, request: p.Update, send: SendEvent) -> p.UpdateReport:
        repos = [self.repos.find(name) for name in request.names] or self.repos.all()
        watcher = self.watcher
        if not repos:
            raise ControlRefused(
                p.REFUSED, "no repositories are watched: add one with insidersctl repos add SPEC"
            )
        if request.versions and len(request.names) != 1:
            raise ControlRefused(p.REFUSED, "--version goes with the NAME of one repository")
        if request.versions:
            log.info(
                "%s: building %s on request (insidersctl update --version)",
                repos[0].dist,
                ", ".join(request.versions),
            )
        if not request.wait:
            watcher.schedule(repos, force=request.force, versions=request.versions)
            queued = tuple(p.RepoOutcome(repo=r.dist, outcome="queued") for r in repos)
            return p.UpdateReport(results=queued, queued=True)

        events_in, events_out = trio.open_memory_channel[p.Progress](_PROGRESS_BUFFER)
        outcomes: list[p.RepoOutcome] = []

        def progress(step: Step) -> None:
            try:
                events_in.send_nowait(progress_wire(step))
            except trio.WouldBlock:
                log.debug("update progress dropped (slow client): %s", step)
            except trio.ClosedResourceError:
                pass  # the check reported after it returned; nobody is listening

        async def run_check() -> None:
            async with events_in:
                extra = {"versions": request.versions} if request.versions else {}
                checked = await watcher.check(
                    repos, force=request.force, progress=progress, **extra
                )
                outcomes.extend(outcome_wire(outcome) for outcome in checked)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_check)
            async with events_out:
                async for event in events_out:
                    await send(event)
        return p.UpdateReport(results=tuple(outcomes))

    # -- mirror targets ------------------------------------------------------------------------

    def _mirror_infos(self) -> tuple[p.MirrorInfo, ...]:
        return tuple(mirror_wire(state) for state in self.mirrors.infos())

    def _mirror(self, name: str) -> MirrorTarget:
        targets = self.mirrors.targets
        target = targets.get(name)
        if target is None:
            known = ", ".join(sorted(targets)) or "none"
            raise ControlRefused(
                p.NOT_FOUND, f"no [mirrors.{name}] in the configuration (configured: {known})"
            )
        return target

    async def verify_mirror(self, request: p.VerifyMirror) -> p.MirrorVerified:
        """Every file the target's manifests name, read back and checked by its sha256."""
        target = self._mirror(request.name)
        try:
            checked, differs = await target.verify()
        except TargetError as error:
            raise ControlRefused(p.REFUSED, f"mirror {request.name}: {error}") from None
        return p.MirrorVerified(
            name=request.name,
            checked=checked,
            differs=tuple(p.MirrorDifference(key=k, problem=why) for k, why in differs),
            now=time.time(),
        )

    async def sync_mirror(self, request: p.SyncMirror) -> p.MirrorSynced:
        """A full comparison of one target with the store, answered when it is done."""
        target = self._mirror(request.name)
        accept: claim.Accept = "force" if request.force else "adopt" if request.adopt else ""
        outcome = await target.full_sync(accept)
        if outcome.refused:
            raise ControlRefused(p.REFUSED, outcome.error or "refused")
        if outcome.error is not None:
            raise ControlRefused(p.REFUSED, f"mirror {request.name}: {outcome.error} (retrying)")
        return copied(p.MirrorSynced, outcome, mirror=mirror_wire(target.info()), now=time.time())

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(self, request: p.CreateToken) -> p.TokenCreated:
        if not _TOKEN_NAME.match(request.name):
            raise ControlRefused(
                p.REFUSED,
                f"{request.name!r} is not a token name: letters, digits and . _ - (at most 64)",
            )
        for project in request.projects:
            if not is_valid_name(project):
                raise ControlRefused(p.REFUSED, f"--project {project!r} is not a project name")
        async with self._token_lock:
            secret = await trio.to_thread.run_sync(
                partial(
                    self.tokens.create,
                    request.name,
                    request.scope,
                    projects=request.projects,
                    expires=request.expires,
                )
            )
        token = next(t for t in self.tokens.all() if t.name == request.name)
        limits = f" for {', '.join(token.projects)}" if token.projects else ""
        until = f", expires {utc(token.expires)}" if token.expires else ""
        log.info("token %s created (%s%s%s)", token.name, token.scope, limits, until)
        return p.TokenCreated(token=token_info(token), secret=secret)

    # -- hosted projects -----------------------------------------------------------------------

    def _project(self, name: str) -> Project:
        if not is_valid_name(name):
            raise ControlRefused(p.REFUSED, f"{name!r} is not a project name")
        project = self.store.get(normalize(name))
        if project is None:
            raise ControlRefused(p.NOT_FOUND, f"no project {name} is hosted here")
        return project

    async def set_project_status(self, request: p.SetProjectStatus) -> p.ProjectStatusSet:
        project = self._project(request.name)
        new = await self.store.set_status(project.normalized, request.status, request.reason)
        reason = f" ({new.status_reason})" if new.status_reason else ""
        log.info("project %s is now %s%s", new.name, new.status, reason)
        return p.ProjectStatusSet(name=new.name, status=new.status, reason=new.status_reason)

    async def yank(self, request: p.Yank | p.Unyank) -> p.YankDone:
        project = self._project(request.project)
        yanked = isinstance(request, p.Yank)
        reason = request.reason if isinstance(request, p.Yank) else None
        changed = await self.store.set_yanked(
            normalize(project.name), request.version, yanked, reason
        )
        if changed:
            log.info(
                "%s %s %s (%d files)",
                "yanked" if yanked else "unyanked",
                project.name,
                request.version,
                changed,
            )
        return p.YankDone(
            project=project.name, version=request.version, yanked=yanked, changed=changed
        )

    async def remove(self, request: p.Remove) -> p.Removed:
        if (request.version is None) == (request.filename is None):
            raise ControlRefused(p.BAD_REQUEST, "remove takes either a version or a filename")
        project = self._project(request.project)
        name = normalize(project.name)
        if request.dry_run:
            files: tuple[str, ...]
            if request.filename is not None:
                files = (request.filename,) if project.file(request.filename) else ()
            else:
                files = tuple(f.filename for f in project.files_of(request.version or ""))
            if not files:
                what = (
                    f"file {request.filename}" if request.filename else f"version {request.version}"
                )
                raise ControlRefused(p.NOT_FOUND, f"{project.name} has no {what}")
            return p.Removed(project=project.name, files=files, dry_run=True)
        gone = await self.store.remove(name, version=request.version, filename=request.filename)
        log.info("removed from %s: %s", project.name, ", ".join(gone))
        return p.Removed(project=project.name, files=tuple(gone))
