"""What each insidersctl command asks insidersd, and how it words the answer for a person.

Most commands are one request and its reply: `asks` and `lists` declare them, and `--json` prints
the reply as it is. The command line that leads here is cli.py.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import msgspec

from insidersctl import protocol as p
from insidersctl.context import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Context, R, note, out
from insidersctl.errors import DaemonUnreachable, Usage
from insidersctl.output import ago, duration, plural, size, table, to_json, without_log
from insidersctl.paths import SYSTEM_SOCKET

T = TypeVar("T")
C = TypeVar("C", bound=p.Clocked)

# -- commands ----------------------------------------------------------------------------------


def asks(
    request: Callable[[argparse.Namespace], p.Request],
    expect: type[R],
    show: Callable[[R], None],
    *,
    long: bool = False,
) -> Callable[[Context], int]:
    """The handler of a command that is one request (made from the arguments) and its reply,
    worded by `show` (or printed as JSON with --json): most commands are just that."""
    return lambda ctx: ctx.answer(request(ctx.args), expect, show, long=long)


def cmd_overview(ctx: Context) -> int:
    """Bare `insidersctl`, as bare `systemctl`: how things are, and where to go from here."""
    try:
        report = ctx.call(p.Status(), p.StatusReport)
    except DaemonUnreachable as error:
        if ctx.json:
            raise
        note(f"insidersctl: {unreachable_message(error)}")
        status = EXIT_UNREACHABLE
    else:
        if ctx.json:
            ctx.emit(report)
            return EXIT_OK
        _show_overview(report)
        status = EXIT_OK
    out("Commands used most:")
    rows = [
        ("insidersctl status", "the daemon, its index, watcher and repositories"),
        ("insidersctl repos add SPEC", "watch a repository and publish its version tags"),
        ("insidersctl update", "check the repositories for new tags now, and watch it work"),
        ("insidersctl projects list", "what the index hosts"),
        ("insidersctl tokens create NAME", "a token for uploads (twine, uv publish)"),
        ("insidersctl logs -f", "follow the daemon's log"),
        ("insidersctl --help", "every command; insidersctl COMMAND --help for one"),
    ]
    out(_fields(rows, indent="  "))
    return status


class Table(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """How one kind of item is printed: a table with a row per item, then the `notes` some
    items add below it (what failed); `empty` is what `list` says when there is none (and what
    to do to have some). `status` and the `list` commands print with these."""

    headers: tuple[str, ...]
    row: Callable[[T, float], tuple[str, ...]]
    empty: str
    notes: Callable[[T, float], None] | None = None

    def print(self, items: Sequence[T], now: float, indent: str = "") -> None:
        out(table(self.headers, [self.row(item, now) for item in items], indent))
        if self.notes is not None:
            for item in items:
                self.notes(item, now)


def lists(
    request: p.Request, expect: type[C], items: Callable[[C], Sequence[T]], as_: Table[T]
) -> Callable[[Context], int]:
    """The handler of a `list` command: the items the reply lists (with the daemon's clock, for
    relative times) printed `as_` a table, or its `empty` note on stderr when there are none."""

    def show(reply: C) -> None:
        listed = items(reply)
        if listed:
            as_.print(listed, reply.now)
        else:
            note(as_.empty)

    return asks(lambda args: request, expect, show)


# `status`, `server status` and the overview word the same report in one way: these are it.


def _show_status(report: p.StatusReport) -> None:
    out(_headline(report))
    rows = [
        *_index_rows(report),
        ("watcher", _watcher_line(report.watcher, report.now)),
        ("repos", f"{len(report.repos)} watched" if report.repos else "none watched"),
    ]
    if report.restart_needed:
        rows.append(
            ("config", f"{', '.join(report.restart_needed)} changed, takes effect at restart")
        )
    out(_fields(rows))
    if report.repos:
        REPOS.print(report.repos, report.now, indent="  ")
    if report.mirrors:
        out(f"mirrors   {len(report.mirrors)}")
        MIRRORS.print(report.mirrors, report.now, indent="  ")


def _show_overview(report: p.StatusReport) -> None:
    failing = sum(1 for r in report.repos if _repo_state(r) == "failing")
    repos = plural(len(report.repos), "repository", "repositories") + (
        f" ({failing} failing)" if failing else ""
    )
    index, hosted = _index_rows(report)[:2]
    watcher = ("watcher", f"{_watcher_line(report.watcher, report.now)}; {repos} watched")
    out(_headline(report))
    out(_fields([index, hosted, watcher], indent="  "))
    out()


def _show_server(report: p.ServerReport) -> None:
    out(_fields([*_index_rows(report), ("up", duration(report.uptime))]))


cmd_status = asks(lambda args: p.Status(), p.StatusReport, _show_status)
cmd_server_status = asks(lambda args: p.ServerStatus(), p.ServerReport, _show_server)


def _headline(report: p.StatusReport) -> str:
    return f"insidersd {report.version} (pid {report.pid}), up {duration(report.uptime)}"


def _index_rows(report: p.IndexFacts) -> list[tuple[str, str]]:
    return [
        ("index", "  ".join(f"{u}/simple/" for u in report.index_urls) or "(not listening yet)"),
        ("hosted", f"{plural(report.projects, 'project')}, {plural(report.files, 'file')}"),
        ("upstream", _upstream(report.upstream, report.upstream_mode)),
        ("data", report.data_dir),
    ]


def _fields(rows: Sequence[tuple[str, str]], indent: str = "") -> str:
    """Name-value lines, the values aligned (a table without its header line)."""
    return table(("", ""), rows, indent).split("\n", 1)[1]


def _upstream(url: str | None, mode: str) -> str:
    if mode == "none" or url is None:
        return "none (projects not hosted here are not found)"
    return f"{mode} to {url}"


def _watcher_line(watcher: p.WatcherInfo, now: float) -> str:
    parts = [watcher.state]
    if watcher.interval:
        parts.append(f"checks every {duration(watcher.interval)}")
    if watcher.state == "running" and watcher.next_check:
        parts.append(f"next {ago(watcher.next_check, now)}")
    if watcher.checking:
        parts.append(f"checking {', '.join(watcher.checking)}")
    if watcher.message:
        parts.append(watcher.message)
    if watcher.sandbox:
        parts.append(_builds(watcher.sandbox))
    return ", ".join(parts)


def _builds(sandbox: str) -> str:
    """What builds run in, as a status line says it."""
    if sandbox.startswith("refused: "):
        return f"builds refused: no sandbox ({sandbox.removeprefix('refused: ')})"
    return f"builds in {sandbox}"


def cmd_server_start(ctx: Context) -> int:
    from insidersctl import service

    return service.start(ctx)


def cmd_server_stop(ctx: Context) -> int:
    from insidersctl import service

    return service.stop(ctx)


def cmd_server_enable(ctx: Context) -> int:
    from insidersctl import unitfiles

    return unitfiles.enable(ctx)


def cmd_server_disable(ctx: Context) -> int:
    from insidersctl import unitfiles

    return unitfiles.disable(ctx)


# -- repositories and the watcher --------------------------------------------------------------


def _policy(repo: p.RepoInfo) -> str:
    if repo.versions == "since":
        return f"since {repo.since}"
    return repo.versions


def _repo_row(r: p.RepoInfo, now: float) -> tuple[str, ...]:
    return (
        r.name,
        r.source,
        _policy(r),
        ago(r.last_check, now),
        r.newest_tag or "-",
        r.last_published or "-",
        _repo_state(r),
    )


def _repo_state(r: p.RepoInfo) -> str:
    if r.state:
        return "-" if r.state == "unchecked" else r.state
    if r.last_error or any(v.status == "failed" for v in r.version_states):
        return "failing"
    if any(v.status == "refused" for v in r.version_states):
        return "refused"
    if r.last_check and not r.newest_tag:
        return "no version tag"
    return "ok" if r.last_check else "-"


def _repo_errors(r: p.RepoInfo, now: float) -> None:
    failed = [v for v in r.version_states if v.status == "failed"]
    if r.last_error and not failed:
        where = f" (log: {r.log})" if r.log else ""
        error = without_log(r.last_error, r.log)
        out(f"{r.name}: {ago(r.last_error_at, now, 'at some point')}: {error}{where}")
    for v in failed:
        where = f" (log: {v.log})" if v.log else ""
        retry = f"; retried {ago(v.retry_at, now)}" if v.retry_at else ""
        message = without_log(v.message or "", v.log)
        out(f"{r.name} {v.version}: failed {ago(v.at, now)}: {message}{where}{retry}")
    for v in r.version_states:
        if v.status == "refused":
            where = f" (log: {v.log})" if v.log else ""
            message = without_log(v.message or "", v.log)
            out(f"{r.name} {v.version}: refused (bytes differ) {ago(v.at, now)}: {message}{where}")
    if r.last_check and not r.newest_tag:
        seen = f"; ignored: {', '.join(r.ignored_tags)}" if r.ignored_tags else ""
        out(f"{r.name}: no version tag among {plural(r.tags_seen, 'tag')}{seen}")


REPOS = Table(
    headers=("NAME", "SOURCE", "VERSIONS", "CHECKED", "NEWEST TAG", "PUBLISHED", "STATE"),
    row=_repo_row,
    notes=_repo_errors,
    empty="no repositories are watched; add one with: insidersctl repos add OWNER/REPO:DIST",
)


def _show_repos(reply: p.RepoList) -> None:
    if not reply.repos:
        note(REPOS.empty)
        return
    REPOS.print(reply.repos, reply.now)
    if reply.sandbox:
        out(_builds(reply.sandbox))


cmd_repos_list = asks(lambda args: p.ListRepos(), p.RepoList, _show_repos)


def cmd_repos_add(ctx: Context) -> int:
    args = ctx.args
    versions: p.VersionPolicy = "all" if args.all else "since" if args.since else "newest"
    if not args.local and not args.publish_to:
        raise Usage("--no-local needs at least one --publish-to target")
    request = p.AddRepo(
        spec=args.spec,
        cwd=os.getcwd(),
        versions=versions,
        since=args.since,
        publish_to=tuple(args.publish_to),
        local=args.local,
    )
    return ctx.answer(request, p.RepoAdded, _show_added)


def _show_added(reply: p.RepoAdded) -> None:
    repo = reply.repo
    targets = (["this index"] if repo.local else []) + list(repo.publish_to)
    out(
        f"added {repo.name} from {repo.source}: {_policy(repo)} version(s), "
        f"published to {', '.join(targets)}"
    )
    if reply.checking:
        note(f"checking it now; watch it with: insidersctl update {repo.name}")
    else:
        note(f"the watcher is paused; build it now with: insidersctl update {repo.name}")


def cmd_repos_set(ctx: Context) -> int:
    args = ctx.args
    versions: p.VersionPolicy | None = (
        "all" if args.all else "since" if args.since else "newest" if args.newest else None
    )
    publish_to = tuple(args.publish_to) if args.publish_to is not None else None
    if versions is None and publish_to is None and args.local is None:
        raise Usage(
            "repos set needs --all, --since VERSION, --newest, --publish-to or --[no-]local"
        )
    request = p.SetRepo(
        name=args.name, versions=versions, since=args.since, publish_to=publish_to, local=args.local
    )
    return ctx.answer(request, p.RepoChanged, _show_changed)


def _show_changed(reply: p.RepoChanged) -> None:
    repo = reply.repo
    targets = (["this index"] if repo.local else []) + list(repo.publish_to)
    same = "" if reply.changed else " (as it was)"
    out(f"{repo.name}: {_policy(repo)} version(s), published to {', '.join(targets)}{same}")
    if reply.changed and "publish_to" not in reply.changed and "local" not in reply.changed:
        note(f"the next check builds by it: insidersctl update {repo.name}")


def _show_unwatched(reply: p.RepoRemoved) -> None:
    out(f"removed {reply.repo.name} ({reply.repo.source}); its published files stay")


cmd_repos_remove = asks(lambda args: p.RemoveRepo(name=args.name), p.RepoRemoved, _show_unwatched)


def cmd_update(ctx: Context) -> int:
    args = ctx.args
    if args.versions and len(args.names) != 1:
        raise Usage("--version goes with the NAME of one repository")
    request = p.Update(
        names=tuple(args.names),
        force=args.force,
        wait=not args.no_wait,
        versions=tuple(args.versions),
    )
    if ctx.json:

        def show(event: p.Progress) -> None:
            print(to_json(event, indent=0), flush=True)

        report = ctx.call(request, p.UpdateReport, progress=show, long=True)
        print(to_json(report, indent=0))
        return _update_status(report)
    from insidersctl.progress import LiveView, PlainView
    from insidersctl.terminal import Terminal

    term = Terminal(sys.stdout)
    view = LiveView(term) if term.live and request.wait else PlainView(term)
    try:
        report = ctx.call(request, p.UpdateReport, progress=view.event, long=True, idle=view.tick)
    finally:
        view.close()
    if report.queued:
        out("check queued; follow it with: insidersctl status")
    else:
        view.finish(report)
    return _update_status(report)


def _update_status(report: p.UpdateReport) -> int:
    refused = any(r.outcome in {"failed", "refused"} for r in report.results)
    return EXIT_FAILED if refused else EXIT_OK


def _show_watcher(reply: p.WatcherReport) -> None:
    out(f"watcher: {_watcher_line(reply.watcher, reply.now)}")


cmd_watcher = asks(
    lambda args: p.WatcherControl(action=args.action), p.WatcherReport, _show_watcher
)


# -- logs and reload ------------------------------------------------------------------------


def cmd_logs(ctx: Context) -> int:
    from insidersctl import logs

    args = ctx.args
    build: str | None = getattr(args, "build", None)
    version: str | None = getattr(args, "version", None)
    if version is not None and build is None:
        raise Usage(f"a VERSION ({version}) goes with --build NAME")
    try:
        where = ctx.call(p.Logs(build=build if version is None else None), p.LogsLocation)
    except DaemonUnreachable as error:
        # A daemon that is not running is when its log matters most: show the file if there is one.
        path = logs.default_log_file()
        if path is None and build is None:
            raise
        if build is None:
            note(f"insidersctl: {error.reason}; its log file {path}:")
        where = p.LogsLocation(path=str(path) if path else None)
    ctx.close()
    lines = None if args.lines == "all" else int(args.lines)
    if (args.since or args.until) and not args.lines_given:
        lines = None  # a time range is the bound, as in journalctl: every entry in it
    if build is not None:
        try:
            path = logs.build_log(
                Path(where.builds) if where.builds else logs.default_build_logs(), build, version
            )
        except FileNotFoundError as error:
            note(f"insidersctl: {error}")
            return EXIT_FAILED
        if where.build_log and version is None:
            path = Path(where.build_log)
            note(f"insidersctl: {where.build_said}: {path}")
        elif version is None:
            note(f"insidersctl: the newest build of {build}, {path.stem}: {path}")
        # The whole build log unless -n says otherwise: it is read to find out why.
        whole = logs.Reading(lines=lines if args.lines_given else None, follow=args.follow)
        return logs.read_file(path, whole)
    keep = logs.Filter(
        priority=logs.parse_priority(args.priority) if args.priority else None,
        # journalctl reads --since and --until itself (and knows more forms).
        since=logs.parse_time(args.since) if args.since and not where.journal else None,
        until=logs.parse_time(args.until) if args.until and not where.journal else None,
        component=getattr(args, "component", None),
    )
    how = logs.Reading(
        lines=lines,
        follow=args.follow,
        keep=keep,
        as_json=ctx.json,
        since=args.since,
        until=args.until,
    )
    return logs.show_log(where, how)


def cmd_reload(ctx: Context) -> int:
    """Status 1 when a part of the reload was refused: `systemctl reload` then says it failed."""
    reply = ctx.call(p.Reload(), p.Reloaded)
    if ctx.json:
        ctx.emit(reply)
    elif reply.certificate_error:
        note(
            "insidersd reloaded its configuration but refused the TLS certificate, the running "
            f"one stays: {reply.certificate_error}"
        )
    else:
        note("insidersd reloaded its configuration")
    if reply.restart_needed and not ctx.json:
        note(f"changed, takes effect at restart: {', '.join(reply.restart_needed)}")
    return EXIT_FAILED if reply.certificate_error else EXIT_OK


# -- tokens ------------------------------------------------------------------------------------


def _token_row(t: p.TokenInfo, now: float) -> tuple[str, ...]:
    return (
        t.name,
        t.scope,
        ", ".join(t.projects) or ("all" if t.scope == "upload" else "-"),
        _expiry(t.expires, now),
        ago(t.last_used, now),
        ago(t.created, now),
    )


def _expiry(expires: float | None, now: float) -> str:
    if expires is None:
        return "never"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return f"expired {when}" if expires <= now else when


TOKENS = Table(
    headers=("NAME", "SCOPE", "PROJECTS", "EXPIRES", "LAST USED", "CREATED"),
    row=_token_row,
    empty="no tokens; make one with: insidersctl tokens create NAME",
)
cmd_tokens_list = lists(p.ListTokens(), p.TokenList, lambda r: r.tokens, TOKENS)


def cmd_tokens_create(ctx: Context) -> int:
    from insidersctl.expiry import parse_expiry  # here: status must not import it

    args = ctx.args
    expires = parse_expiry(args.expires) if args.expires is not None else None
    request = p.CreateToken(
        name=args.name, scope=args.scope, projects=tuple(args.projects), expires=expires
    )
    return ctx.answer(request, p.TokenCreated, _show_created)


def _show_created(reply: p.TokenCreated) -> None:
    # The secret alone on stdout, so that TOKEN=$(insidersctl tokens create ci) works.
    note(f"token {reply.token.name} ({reply.token.scope}); it is shown only this once:")
    out(reply.secret)


cmd_tokens_revoke = asks(
    lambda args: p.RevokeToken(name=args.name),
    p.TokenRevoked,
    lambda reply: out(f"revoked token {reply.name}"),
)


# -- projects ----------------------------------------------------------------------------------


def _project_row(project: p.ProjectInfo, now: float) -> tuple[str, ...]:
    return (
        project.name + (f" ({project.status})" if project.status != "active" else ""),
        project.latest or "-",
        str(project.versions),
        str(project.files) + (f" ({project.yanked_files} yanked)" if project.yanked_files else ""),
        size(project.size),
        ago(project.last_upload, now),
    )


PROJECTS = Table(
    headers=("NAME", "LATEST", "VERSIONS", "FILES", "SIZE", "UPLOADED"),
    row=_project_row,
    empty="no projects are hosted here yet",
)
cmd_projects_list = lists(p.ListProjects(), p.ProjectList, lambda r: r.projects, PROJECTS)


def _show_project(reply: p.ProjectDetail) -> None:
    rows = [
        (
            f.version,
            f.filename,
            size(f.size),
            ago(f.upload_time, reply.now),
            f.uploaded_by or "-",
            ("yanked" + (f": {f.yanked_reason}" if f.yanked_reason else "")) if f.yanked else "",
        )
        for f in reply.files
    ]
    out(reply.name)
    out(table(("VERSION", "FILE", "SIZE", "UPLOADED", "BY", "YANKED"), rows, indent="  "))


cmd_projects_show = asks(lambda args: p.ShowProject(name=args.name), p.ProjectDetail, _show_project)
cmd_projects_status = asks(
    lambda args: p.SetProjectStatus(name=args.name, status=args.status, reason=args.reason),
    p.ProjectStatusSet,
    lambda reply: out(
        f"{reply.name} is {reply.status}" + (f": {reply.reason}" if reply.reason else "")
    ),
)


def cmd_yank(ctx: Context) -> int:
    args = ctx.args
    request: p.Yank | p.Unyank
    if args.command == "yank":
        request = p.Yank(project=args.project, version=args.version, reason=args.reason)
    else:
        request = p.Unyank(project=args.project, version=args.version)
    return ctx.answer(request, p.YankDone, _show_yank)


def _show_yank(reply: p.YankDone) -> None:
    verb = "yanked" if reply.yanked else "unyanked"
    release = f"{reply.project} {reply.version}"
    changed = f"({plural(reply.changed, 'file')})"
    out(f"{verb} {release} {changed}" if reply.changed else f"{release} was {verb} already")


def cmd_remove(ctx: Context) -> int:
    args = ctx.args
    if (args.version is None) == (args.file is None):
        raise Usage("give either a VERSION or --file FILENAME")
    what = {"project": args.project, "version": args.version, "filename": args.file}
    if not args.yes and not _confirmed(ctx.call(p.Remove(**what, dry_run=True), p.Removed)):
        return EXIT_FAILED
    return ctx.answer(p.Remove(**what), p.Removed, _show_removed)


def _confirmed(preview: p.Removed) -> bool:
    """Whether the person at the terminal agrees to remove what `preview` lists."""
    if not sys.stdin.isatty():
        note("insidersctl: removing files needs a confirmation: run it in a terminal or pass --yes")
        return False
    listing = "\n".join(f"  {name}" for name in preview.files)
    sys.stderr.write(
        f"remove {plural(len(preview.files), 'file')} of {preview.project} from the index?\n"
        f"{listing}\nThis cannot be undone. [y/N] "
    )
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
        note("nothing removed")
        return False
    return True


def _show_removed(reply: p.Removed) -> None:
    out(f"removed {plural(len(reply.files), 'file')} of {reply.project}:")
    for name in reply.files:
        out(f"  {name}")


# -- mirrors -----------------------------------------------------------------------------------


def _mirror_state(mirror: p.MirrorInfo, now: float) -> str:
    parts = [mirror.state]
    if mirror.pending:
        parts.append(f"{plural(mirror.pending, 'project')} pending")
    if mirror.full_sync_pending and mirror.state != "refused":  # it waits for a person instead
        parts.append("full comparison pending")
    if mirror.withheld:
        parts.append(
            f"{plural(mirror.withheld, 'project')} it holds answered 503, not from the upstream"
        )
    if mirror.lag >= 1:
        parts.append(f"lag {duration(mirror.lag)}")
    if mirror.next_retry:
        parts.append(f"retry {ago(mirror.next_retry, now)}")
    return ", ".join(parts)


def _mirror_error(mirror: p.MirrorInfo, now: float) -> None:
    if mirror.last_error:
        note(f"mirror {mirror.name}: {mirror.last_error} ({ago(mirror.last_error_at, now)})")


def _mirror_current(mirror: p.MirrorInfo, now: float) -> str:
    """ "now" for a target that shows the store (however long ago its last write was), else when
    it last did."""
    behind = mirror.pending or mirror.full_sync_pending or mirror.state != "idle"
    if mirror.last_sync is not None and not behind:
        return "now"
    return f"last {ago(mirror.last_sync, now)}" if mirror.last_sync else "never"


MIRRORS = Table(
    headers=("NAME", "KIND", "WHERE", "STATE", "CURRENT"),
    row=lambda m, now: (m.name, m.kind, m.location, _mirror_state(m, now), _mirror_current(m, now)),
    notes=_mirror_error,
    empty="no mirror targets: add a [mirrors.NAME] section to the configuration",
)


def _show_synced(reply: p.MirrorSynced) -> None:
    rewritten = f" ({reply.rewritten} of them held other bytes)" if reply.rewritten else ""
    out(
        f"mirror {reply.mirror.name} is current: {plural(reply.files, 'file')}{rewritten} and "
        f"{plural(reply.pages, 'page')} written, {reply.deleted} removed "
        f"in {reply.seconds:.1f} s"
    )


def cmd_mirrors_verify(ctx: Context) -> int:
    """Each file that differs, on stdout; the status says whether any does."""
    reply = ctx.call(p.VerifyMirror(name=ctx.args.name), p.MirrorVerified, long=True)
    if ctx.json:
        ctx.emit(reply)
    else:
        for difference in reply.differs:
            out(f"{difference.key}: {difference.problem}")
        if reply.differs:
            note(
                f"mirror {reply.name}: {plural(len(reply.differs), 'object')} of "
                f"{plural(reply.checked, 'file')} differ; `insidersctl mirrors sync "
                f"{reply.name}` writes them again"
            )
        else:
            note(f"mirror {reply.name}: all {plural(reply.checked, 'file')} match their sha256")
    return EXIT_FAILED if reply.differs else EXIT_OK


cmd_mirrors_list = lists(p.ListMirrors(), p.MirrorList, lambda r: r.mirrors, MIRRORS)
cmd_mirrors_sync = asks(
    lambda args: p.SyncMirror(name=args.name, adopt=args.adopt, force=args.force),
    p.MirrorSynced,
    _show_synced,
    long=True,
)


def unreachable_message(error: DaemonUnreachable) -> str:
    """What to say when no daemon answers: where it was asked, and how to start one."""
    if error.errno == errno.EACCES:
        group = " (members of the group insiders may use the system service)"
        return f"{error.reason} {error.path}{group if error.path == SYSTEM_SOCKET else ''}"
    from insidersctl.service import how_to_start

    start = how_to_start(system=error.path == SYSTEM_SOCKET)
    return f"{error.reason} at {error.path}; start it with {start}"


# -- the upstream file cache --------------------------------------------------------------------


def _show_cache(report: p.CacheReport) -> None:
    asked = report.hits + report.misses
    rate = f"{100 * report.hits / asked:.0f}% of {plural(asked, 'request')}" if asked else "-"
    rows = [
        ("mode", report.mode + ("" if report.mode == "cache" else " (files are not cached)")),
        ("upstream", report.upstream or "-"),
        ("directory", report.directory),
        ("size", f"{size(report.size)} of {size(report.limit)}"),
        ("files", str(report.files)),
        ("hit rate", f"{rate} since the daemon started"),
        ("oldest", f"last used {ago(report.oldest, report.now)}" if report.oldest else "-"),
    ]
    out(_fields(rows))


def _show_pruned(reply: p.CachePruned) -> None:
    note(f"{plural(reply.files, 'file')} dropped ({size(reply.size)})")


def _prune_request(args: argparse.Namespace) -> p.Request:
    from insidersctl.expiry import parse_age

    older = None if args.older_than is None else parse_age(args.older_than)
    return p.PruneCache(older_than=older, names=tuple(args.names))


cmd_cache_status = asks(lambda _: p.CacheStatus(), p.CacheReport, _show_cache)
cmd_cache_prune = asks(_prune_request, p.CachePruned, _show_pruned)


def requirement_lines(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    """The requirements of a requirements.txt: continuation lines joined, options (--hash) and
    comments dropped, `-r OTHER` followed (relative to the file)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise Usage(f"-r {path}: {error.strerror}") from None
    lines: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            other = (path.parent / line.split(None, 1)[1]).resolve()
            if other not in seen:
                lines += requirement_lines(other, seen | {path.resolve()})
        elif line and not line.startswith(("#", "-")):
            lines.append(line.split(" -", 1)[0].strip())
    return lines


def _fetch_request(args: argparse.Namespace) -> p.Request:
    lines = list(args.requirements)
    for name in args.files:
        lines += requirement_lines(Path(name))
    if not lines:
        raise Usage("name requirements (NAME, NAME==VERSION) or a file of them (-r FILE)")
    return p.FetchCache(requirements=tuple(lines), platforms=tuple(args.platforms))


def _show_fetched(reply: p.CacheFetched) -> None:
    note(
        f"{plural(reply.fetched, 'file')} fetched ({size(reply.size)}), "
        f"{reply.cached} there already"
    )
    for failure in reply.failures:
        note(f"  not fetched: {failure}")


def cmd_cache_fetch(ctx: Context) -> int:
    reply = ctx.call(_fetch_request(ctx.args), p.CacheFetched, long=True)
    if ctx.json:
        ctx.emit(reply)
    else:
        _show_fetched(reply)
    return EXIT_FAILED if reply.failures else EXIT_OK
