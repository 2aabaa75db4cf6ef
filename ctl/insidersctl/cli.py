"""insidersctl's commands: parse the command line, ask insidersd, print the answer.

Exit status: 0 done, 1 refused or failed, 2 usage error, 3 daemon not reachable.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

from insidersctl import __version__
from insidersctl import protocol as p
from insidersctl.context import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Context,
    R,
    note,
    out,
)
from insidersctl.errors import BadLine, ClientError, DaemonUnreachable, Refused, Usage
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
        note(f"insidersctl: {_unreachable_message(error)}")
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


# `status`, `server status` and the overview word the same report in one way: these are it.


class Table(Generic[T]):
    """How one kind of item is printed: a table with a row per item, then the `notes` some
    items add below it (what failed); `empty` is what `list` says when there is none (and what
    to do to have some). `status` and the `list` commands print with these."""

    __slots__ = ("empty", "headers", "notes", "row")

    def __init__(
        self,
        headers: tuple[str, ...],
        row: Callable[[T, float], tuple[str, ...]],
        *,
        notes: Callable[[T, float], None] | None = None,
        empty: str,
    ) -> None:
        self.headers = headers
        self.row = row
        self.notes = notes
        self.empty = empty

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
    failing = sum(1 for r in report.repos if r.last_error)
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
    return ", ".join(parts)


def cmd_server_start(ctx: Context) -> int:
    from insidersctl import service

    return service.start(ctx)


def cmd_server_stop(ctx: Context) -> int:
    from insidersctl import service

    return service.stop(ctx)


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
    if r.last_error or any(v.status == "failed" for v in r.version_states):
        return "failing"
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
    if r.last_check and not r.newest_tag:
        seen = f"; ignored: {', '.join(r.ignored_tags)}" if r.ignored_tags else ""
        out(f"{r.name}: no version tag among {plural(r.tags_seen, 'tag')}{seen}")


REPOS = Table(
    ("NAME", "SOURCE", "VERSIONS", "CHECKED", "NEWEST TAG", "PUBLISHED", "STATE"),
    _repo_row,
    notes=_repo_errors,
    empty="no repositories are watched; add one with: insidersctl repos add OWNER/REPO:DIST",
)
cmd_repos_list = lists(p.ListRepos(), p.RepoList, lambda r: r.repos, REPOS)


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
    return ctx.answer(request, p.RepoAdded, lambda reply: _show_added(reply.repo))


def _show_added(repo: p.RepoInfo) -> None:
    targets = (["this index"] if repo.local else []) + list(repo.publish_to)
    out(
        f"added {repo.name} from {repo.source}: {_policy(repo)} version(s), "
        f"published to {', '.join(targets)}"
    )


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
    return EXIT_FAILED if any(r.outcome == "failed" for r in report.results) else EXIT_OK


def _show_watcher(reply: p.WatcherReport) -> None:
    out(f"watcher: {_watcher_line(reply.watcher, reply.now)}")


cmd_watcher = asks(
    lambda args: p.WatcherControl(action=args.action), p.WatcherReport, _show_watcher
)


# -- logs, completion, reload ------------------------------------------------------------------


def cmd_logs(ctx: Context) -> int:
    from insidersctl import logs

    args = ctx.args
    build: str | None = getattr(args, "build", None)
    version: str | None = getattr(args, "version", None)
    if version is not None and build is None:
        raise Usage(f"a VERSION ({version}) goes with --build NAME")
    try:
        where = ctx.call(p.Logs(), p.LogsLocation)
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
    if build is not None:
        try:
            path = logs.build_log(
                Path(where.builds) if where.builds else logs.default_build_logs(), build, version
            )
        except FileNotFoundError as error:
            note(f"insidersctl: {error}")
            return EXIT_FAILED
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


def cmd_completion(ctx: Context) -> int:
    from insidersctl.completion import script

    out(script(ctx.args.shell, parser()).rstrip("\n"))
    return EXIT_OK


def _show_reloaded(reply: p.Reloaded) -> None:
    note("insidersd reloaded its configuration")
    if reply.restart_needed:
        note(f"changed, takes effect at restart: {', '.join(reply.restart_needed)}")


cmd_reload = asks(lambda args: p.Reload(), p.Reloaded, _show_reloaded)


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
    ("NAME", "SCOPE", "PROJECTS", "EXPIRES", "LAST USED", "CREATED"),
    _token_row,
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
    ("NAME", "LATEST", "VERSIONS", "FILES", "SIZE", "UPLOADED"),
    _project_row,
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
    if reply.changed:
        out(f"{verb} {reply.project} {reply.version} ({plural(reply.changed, 'file')})")
    else:
        out(f"{reply.project} {reply.version} was {verb} already")


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
    if mirror.full_sync_pending:
        parts.append("full comparison pending")
    if mirror.lag >= 1:
        parts.append(f"lag {duration(mirror.lag)}")
    if mirror.next_retry:
        parts.append(f"retry {ago(mirror.next_retry, now)}")
    return ", ".join(parts)


def _mirror_error(mirror: p.MirrorInfo, now: float) -> None:
    if mirror.last_error:
        note(f"mirror {mirror.name}: {mirror.last_error} ({ago(mirror.last_error_at, now)})")


MIRRORS = Table(
    ("NAME", "KIND", "WHERE", "STATE", "CURRENT"),
    lambda m, now: (m.name, m.kind, m.location, _mirror_state(m, now), ago(m.last_sync, now)),
    notes=_mirror_error,
    empty="no mirror targets: add a [mirrors.NAME] section to the configuration",
)


def _show_synced(reply: p.MirrorSynced) -> None:
    out(
        f"mirror {reply.mirror.name} is current: {plural(reply.files, 'file')} and "
        f"{plural(reply.pages, 'page')} written, {reply.deleted} removed "
        f"in {reply.seconds:.1f} s"
    )


cmd_mirrors_list = lists(p.ListMirrors(), p.MirrorList, lambda r: r.mirrors, MIRRORS)
cmd_mirrors_sync = asks(
    lambda args: p.SyncMirror(name=args.name), p.MirrorSynced, _show_synced, long=True
)


# -- the command line --------------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options taken before and after the command: `--json status` is `status --json`."""
    default = argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="print the reply as JSON (stable field names)",
    )
    where = (
        (
            ("--socket",),
            "PATH",
            "the control socket (default: $INSIDERS_SOCKET, else where insidersd puts it)",
            "file",
        ),
        (
            ("--runtime-dir",),
            "DIR",
            "the daemon's runtime directory (as insidersd --runtime-dir)",
            "dir",
        ),
        (
            ("-c", "--config"),
            "FILE",
            "the daemon's config file, to read paths.runtime-dir from",
            "file",
        ),
    )
    for flags, metavar, help, kind in where:
        action = group.add_argument(
            *flags, metavar=metavar, default=default if suppress else None, help=help
        )
        completes(action, kind)
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default if suppress else 30.0,
        help="how long to wait for the daemon (default 30)",
    )
    return common


Configure = Callable[[argparse.ArgumentParser], None]


def completes(action: argparse.Action, kind: str) -> argparse.Action:
    """What the argument's values complete to in a shell: repos, tokens, projects (names the
    daemon knows), file or dir (insidersctl.completion reads it)."""
    action.complete = kind  # type: ignore[attr-defined]
    return action


# Plain classes, not dataclasses: those compile their methods at import, a few ms of start-up.
class Command:
    __slots__ = ("configure", "handler", "help")

    def __init__(
        self, handler: Callable[[Context], int], help: str, configure: Configure | None = None
    ) -> None:
        self.handler = handler
        self.help = help
        self.configure = configure


class Group:
    __slots__ = ("commands", "help")

    def __init__(self, help: str, commands: dict[str, Command]) -> None:
        self.help = help
        self.commands = commands


def _repos_add(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "spec",
        metavar="SPEC",
        help="OWNER/REPO:DIST (GitHub), URL:DIST (https, ssh, git, file or git@host:path), "
        "or PATH:DIST; :DIST may be left out for a local repository whose pyproject.toml names it",
    )
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="build every version tag, not the newest")
    which.add_argument("--since", metavar="VERSION", help="build every version from VERSION on")
    sub.add_argument(
        "--publish-to",
        metavar="NAME",
        action="append",
        default=[],
        help="also upload to this index of the config (repeatable)",
    )
    sub.add_argument(
        "--no-local",
        dest="local",
        action="store_false",
        help="publish to the --publish-to targets only, not to this index",
    )


def _name(metavar: str, help: str | None = None, complete: str | None = None) -> Configure:
    def configure(sub: argparse.ArgumentParser) -> None:
        action = sub.add_argument("name", metavar=metavar, help=help)
        if complete:
            completes(action, complete)

    return configure


def _update(sub: argparse.ArgumentParser) -> None:
    names = sub.add_argument("names", metavar="NAME", nargs="*", help="repositories (default: all)")
    completes(names, "repos")
    sub.add_argument(
        "--force",
        action="store_true",
        help="rebuild the newest version even if published: identical bytes change nothing, "
        "other bytes are refused (a published file never changes)",
    )
    sub.add_argument(
        "--version",
        dest="versions",
        metavar="VERSION",
        action="append",
        default=[],
        help="build this version of NAME (repeatable), even one removed from the index",
    )
    wait = sub.add_mutually_exclusive_group()
    wait.add_argument("--no-wait", action="store_true", help="queue the check and return at once")
    wait.add_argument(
        "--wait", action="store_false", dest="no_wait", help="show progress until done (default)"
    )


def _line_count(text: str) -> str:
    if text != "all" and not (text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: a count of entries, 0 or more, or all")
    return text


class _LinesAction(argparse.Action):
    """-n N; remembers that it was given (a build log is printed whole unless it is)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.lines_given = True


def _logs(sub: argparse.ArgumentParser) -> None:
    """journalctl's options, with journalctl's meaning."""
    sub.add_argument(
        "-f", "--follow", action="store_true", help="then print new entries as they come"
    )
    sub.add_argument(
        "-n",
        "--lines",
        type=_line_count,
        action=_LinesAction,
        default="50",
        metavar="N",
        help="the last N entries (default 50; 0: none, all: every one)",
    )
    sub.set_defaults(lines_given=False)
    sub.add_argument(
        "-p",
        "--priority",
        metavar="PRIORITY",
        help="entries of this priority or a more urgent one: emerg, alert, crit, err, warning, "
        "notice, info, debug, 0-7, or a range FROM..TO",
    )
    sub.add_argument(
        "--since",
        metavar="TIME",
        help="entries from TIME on: YYYY-MM-DD [HH:MM[:SS]], HH:MM, today, yesterday, "
        'or a span before now: -1h, "30 min ago"',
    )
    sub.add_argument("--until", metavar="TIME", help="entries up to TIME (the same forms)")


def _component_logs(component: str) -> Configure:
    def configure(sub: argparse.ArgumentParser) -> None:
        _logs(sub)
        sub.set_defaults(component=component)

    return configure


def _daemon_logs(sub: argparse.ArgumentParser) -> None:
    _logs(sub)
    build = sub.add_argument(
        "--build",
        metavar="NAME",
        help="print the log of NAME's newest build instead (of VERSION's, if given)",
    )
    completes(build, "repos")
    sub.add_argument("version", metavar="VERSION", nargs="?", help="with --build: that version")


def _tokens_create(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument(
        "--scope",
        choices=["upload", "read"],
        default="upload",
        help="upload (default; it reads too) or read",
    )
    sub.add_argument(
        "--project",
        dest="projects",
        metavar="NAME",
        action="append",
        default=[],
        help="limit an upload token to this project (repeatable)",
    )
    sub.add_argument(
        "--expires",
        metavar="WHEN",
        help="a lifetime (30d, 12h, 2w) or a date (2027-01-31, start of the day in UTC)",
    )


def _projects_status(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="PROJECT")
    sub.add_argument(
        "status",
        metavar="STATUS",
        choices=["active", "archived", "quarantined", "deprecated"],
        help="active; archived: no new files; quarantined: no file listed or served; "
        "deprecated: shown to installers",
    )
    sub.add_argument("--reason", metavar="TEXT", help="shown with the status")


def _project_version(sub: argparse.ArgumentParser) -> None:
    completes(sub.add_argument("project", metavar="PROJECT"), "projects")
    sub.add_argument("version", metavar="VERSION")


def _yank(sub: argparse.ArgumentParser) -> None:
    _project_version(sub)
    sub.add_argument("--reason", metavar="TEXT", help="shown to installers")


def _remove(sub: argparse.ArgumentParser) -> None:
    completes(sub.add_argument("project", metavar="PROJECT"), "projects")
    sub.add_argument("version", metavar="VERSION", nargs="?", help="every file of it")
    sub.add_argument("--file", metavar="FILENAME", help="just this file")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _completion(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "shell", choices=["bash", "zsh", "fish"], metavar="SHELL", help="bash, zsh or fish"
    )


COMMANDS: dict[str, Command | Group] = {
    "status": Command(cmd_status, "the daemon, its index, watcher and repositories"),
    "server": Group(
        "the package index",
        {
            "status": Command(cmd_server_status, "the index's address, counts and upstream"),
            "start": Command(
                cmd_server_start, "start insidersd (systemctl start, when its unit is installed)"
            ),
            "stop": Command(cmd_server_stop, "stop insidersd (systemctl stop, else SIGTERM)"),
            "logs": Command(cmd_logs, "the log of the index alone", _component_logs("server")),
        },
    ),
    "repos": Group(
        "the watched git repositories",
        {
            "add": Command(
                cmd_repos_add, "watch a repository and publish its version tags", _repos_add
            ),
            "list": Command(cmd_repos_list, "the watched repositories and their last results"),
            "remove": Command(
                cmd_repos_remove,
                "stop watching a repository",
                _name("NAME", "its distribution name or its source", "repos"),
            ),
        },
    ),
    "update": Command(cmd_update, "check repositories for new tags now", _update),
    "watcher": Group(
        "the periodic watcher",
        {
            "start": Command(cmd_watcher, "resume periodic checks"),
            "stop": Command(cmd_watcher, "pause periodic checks (update still works)"),
            "status": Command(cmd_watcher, "whether it runs, and when it checks next"),
            "logs": Command(cmd_logs, "the log of the watcher alone", _component_logs("watcher")),
        },
    ),
    "logs": Command(cmd_logs, "the daemon's log (journalctl under systemd)", _daemon_logs),
    "reload": Command(
        cmd_reload, "re-read the config file; returns once the new settings are in force"
    ),
    "tokens": Group(
        "the index's access tokens",
        {
            "create": Command(
                cmd_tokens_create, "make a token; it is printed once", _tokens_create
            ),
            "list": Command(cmd_tokens_list, "the tokens (names and scopes, never secrets)"),
            "revoke": Command(cmd_tokens_revoke, "delete a token", _name("NAME", None, "tokens")),
        },
    ),
    "projects": Group(
        "the hosted projects",
        {
            "list": Command(cmd_projects_list, "every hosted project"),
            "show": Command(
                cmd_projects_show, "the files of one project", _name("PROJECT", None, "projects")
            ),
            "status": Command(
                cmd_projects_status, "set a project's status (PEP 792)", _projects_status
            ),
        },
    ),
    "yank": Command(cmd_yank, "mark a version yanked (PEP 592)", _yank),
    "unyank": Command(cmd_yank, "undo a yank", _project_version),
    "remove": Command(cmd_remove, "unpublish a version or one file", _remove),
    "completion": Command(
        cmd_completion,
        "print the completion script of a shell: source <(insidersctl completion bash)",
        _completion,
    ),
    "mirrors": Group(
        "the mirror targets (static copies of the index: directories, buckets)",
        {
            "list": Command(cmd_mirrors_list, "each target's state, lag, pending work and error"),
            "sync": Command(
                cmd_mirrors_sync,
                "compare a target with the store and repair it now",
                _name("NAME", "the [mirrors.NAME] of the configuration"),
            ),
        },
    ),
}

# Options that take a value: what follows them is not a command word.
_VALUE_OPTIONS = frozenset(
    {"--socket", "--runtime-dir", "-c", "--config", "--timeout", "--since", "--publish-to"}
    | {"--scope", "--reason", "--file", "-n", "--lines", "-p", "--priority", "--until", "--build"}
    | {"--version"}
    | {"--project", "--expires"}
)


def command_words(argv: Sequence[str]) -> list[str]:
    """The command and action named in argv (a guess that only decides what to build)."""
    words: list[str] = []
    takes_value = False
    for arg in argv:
        if takes_value:
            takes_value = False
        elif arg == "--":
            break
        elif arg.startswith("-"):
            takes_value = arg in _VALUE_OPTIONS
        else:
            words.append(arg)
    return words[:2]


def parser(
    words: Sequence[str] | None = None,
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The command line; with `words`, only the branch they name.

    argparse is slow to build (gettext lookups per parser): the whole tree costs more than the
    rest of a `status` call, and only --help and errors need all of it.
    """

    def chosen(level: dict[str, Any], index: int) -> list[str]:
        word = words[index] if words is not None and len(words) > index else None
        return [word] if word in level else list(level)

    shared = [_common(suppress=True)]
    top = parser_class(
        prog="insidersctl",
        description="Control insidersd, the self-hosted package index: its watched repositories, "
        "tokens and hosted projects.",
        epilog="Exit status: 0 done, 1 refused or failed, 2 usage error, "
        "3 insidersd not reachable.",
        parents=[_common(suppress=False)],
    )
    top.add_argument("--version", action="version", version=f"insidersctl {__version__}")
    # No command: a short status and the commands used most (cmd_overview), as systemctl does.
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for name in chosen(COMMANDS, 0):
        entry = COMMANDS[name]
        if isinstance(entry, Command):
            _add(commands, name, entry, shared)
            continue
        group = commands.add_parser(name, help=entry.help, description=entry.help)
        actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
        for action in chosen(entry.commands, 1):
            _add(actions, action, entry.commands[action], shared)
    return top


def _add(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: Command,
    shared: list[argparse.ArgumentParser],
) -> None:
    sub = group.add_parser(name, help=command.help, description=command.help, parents=shared)
    sub.set_defaults(handler=command.handler)
    if command.configure is not None:
        command.configure(sub)


class _Quiet(argparse.ArgumentParser):
    """The partial parser: an error means "ask the full parser", which says it properly."""

    def error(self, message: str) -> NoReturn:
        raise BadLine(message)


def _time_values(argv: Sequence[str]) -> list[str]:
    """`--since -1h` as journalctl takes it: argparse would read -1h as an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in {"--since", "--until"} and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse(argv: Sequence[str]) -> argparse.Namespace:
    argv = _time_values(argv)
    if not {"-h", "--help", "--version"} & set(argv):
        try:
            return parser(command_words(argv), _Quiet).parse_args(argv)
        except BadLine:
            pass  # the full parser below prints the error
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["__complete"]:  # hidden: the completion scripts ask it for names
        from insidersctl.completion import daemon_names

        return daemon_names(argv[1] if len(argv) > 1 else "", argv[2:])
    try:
        args = parse(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    ctx = Context(args)
    try:
        return int(getattr(args, "handler", cmd_overview)(ctx))
    except Usage as error:
        note(f"insidersctl {args.command}: {error}" if args.command else f"insidersctl: {error}")
        return EXIT_USAGE
    except DaemonUnreachable as error:
        return _fail(ctx, "unreachable", _unreachable_message(error), EXIT_UNREACHABLE)
    except Refused as error:
        return _fail(ctx, error.error.code, error.error.message, EXIT_FAILED)
    except ClientError as error:
        return _fail(ctx, "connection", str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        ctx.close()


def _fail(ctx: Context, code: str, message: str, status: int) -> int:
    if ctx.json:
        print(to_json(p.Error(code=code, message=message)))
    note(f"insidersctl: {message}")
    return status


def _unreachable_message(error: DaemonUnreachable) -> str:
    if error.errno == errno.EACCES:
        group = " (members of the group insiders may use the system service)"
        return f"{error.reason} {error.path}{group if error.path == SYSTEM_SOCKET else ''}"
    if error.path == SYSTEM_SOCKET:
        start = "`sudo systemctl start insiders`"
    else:
        start = "`systemctl --user start insiders` or `insidersd`"
    return f"{error.reason} at {error.path}; start it with {start}"
