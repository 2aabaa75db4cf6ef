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
from typing import Any, NoReturn, TypeVar

from insidersctl import __version__
from insidersctl import protocol as p
from insidersctl.client import (
    ClientError,
    Connection,
    ConnectionFailed,
    DaemonUnreachable,
    Refused,
)
from insidersctl.output import ago, duration, plural, size, table, to_json, without_log
from insidersctl.paths import SYSTEM_SOCKET, socket_candidates

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

R = TypeVar("R", bound=p.Reply)


class Usage(Exception):
    """A command line that parses but makes no sense; exit status 2."""


class Context:
    """What a command needs: its arguments, the way to the daemon, and where to print."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.timeout: float = args.timeout
        self.candidates = socket_candidates(
            socket_path=args.socket, runtime=args.runtime_dir, config=args.config
        )
        self._connection: Connection | None = None

    def connect(self) -> Connection:
        if self._connection is None:
            failures: list[DaemonUnreachable] = []
            for path in self.candidates:
                try:
                    self._connection = Connection.open(path, timeout=self.timeout)
                    break
                except DaemonUnreachable as error:
                    failures.append(error)
            else:
                # The first path is the one this user's daemon would use: report it, unless a
                # later one exists and said something more useful (e.g. no permission).
                present = [f for f in failures if f.errno != errno.ENOENT]
                raise (present or failures)[0]
        return self._connection

    def call(
        self,
        request: p.Request,
        expect: type[R],
        *,
        progress: Callable[[p.Progress], None] | None = None,
        long: bool = False,
        idle: Callable[[], None] | None = None,
    ) -> R:
        """The reply to `request`, of type `expect`; `long`: no time limit between messages
        (`idle` is then called twice a second while none comes)."""
        timeout = None if long else self.timeout
        reply = self.connect().call(
            request, progress=progress, timeout=timeout, idle=idle if long else None
        )
        if not isinstance(reply, expect):
            raise ConnectionFailed(
                f"insidersd answered {reply.__class__.__name__} to {request.__class__.__name__}"
            )
        return reply

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def emit(self, message: p.Reply) -> None:
        print(to_json(message))


def out(text: str = "") -> None:
    print(text)


def note(text: str) -> None:
    print(text, file=sys.stderr)


# -- commands ----------------------------------------------------------------------------------


def cmd_status(ctx: Context) -> int:
    report = ctx.call(p.Status(), p.StatusReport)
    if ctx.json:
        ctx.emit(report)
        return EXIT_OK
    out(f"insidersd {report.version} (pid {report.pid}), up {duration(report.uptime)}")
    rows = [
        ("index", "  ".join(f"{u}/simple/" for u in report.index_urls) or "(not listening yet)"),
        ("hosted", f"{plural(report.projects, 'project')}, {plural(report.files, 'file')}"),
        ("upstream", _upstream(report.upstream, report.upstream_mode)),
        ("data", report.data_dir),
        ("watcher", _watcher_line(report.watcher, report.now)),
        ("repos", f"{len(report.repos)} watched" if report.repos else "none watched"),
    ]
    if report.restart_needed:
        rows.append(
            ("config", f"{', '.join(report.restart_needed)} changed, takes effect at restart")
        )
    out(table(("", ""), rows).split("\n", 1)[1])
    if report.repos:
        out(_repo_table(report.repos, report.now, indent="  "))
        _repo_errors(report.repos, report.now)
    if report.mirrors:
        out(f"mirrors   {len(report.mirrors)}")
        out(_mirror_table(report.mirrors, report.now, indent="  "))
        _mirror_errors(report.mirrors, report.now)
    return EXIT_OK


def cmd_overview(ctx: Context) -> int:
    """Bare `insidersctl`, as bare `systemctl`: how things are, and where to go from here."""
    try:
        report = ctx.call(p.Status(), p.StatusReport)
    except DaemonUnreachable as error:
        if ctx.json:
            raise
        note(f"insidersctl: {_unreachable_message(error)}")
        status, report = EXIT_UNREACHABLE, None
    else:
        status = EXIT_OK
    if ctx.json and report is not None:
        ctx.emit(report)
        return status
    if report is not None:
        index = "  ".join(f"{u}/simple/" for u in report.index_urls) or "(not listening yet)"
        failing = sum(1 for r in report.repos if r.last_error)
        repos = plural(len(report.repos), "repository", "repositories") + (
            f" ({failing} failing)" if failing else ""
        )
        out(f"insidersd {report.version} (pid {report.pid}), up {duration(report.uptime)}")
        out(f"  index    {index}")
        out(f"  hosted   {plural(report.projects, 'project')}, {plural(report.files, 'file')}")
        out(f"  watcher  {_watcher_line(report.watcher, report.now)}; {repos} watched")
        out()
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
    out(table(("", ""), rows, indent="  ").split("\n", 1)[1])
    return status


def cmd_server_start(ctx: Context) -> int:
    from insidersctl import service

    return service.start(ctx)


def cmd_server_stop(ctx: Context) -> int:
    from insidersctl import service

    return service.stop(ctx)


def cmd_server_status(ctx: Context) -> int:
    report = ctx.call(p.ServerStatus(), p.ServerReport)
    if ctx.json:
        ctx.emit(report)
        return EXIT_OK
    rows = [
        ("index", "  ".join(f"{u}/simple/" for u in report.index_urls) or "(not listening yet)"),
        ("hosted", f"{plural(report.projects, 'project')}, {plural(report.files, 'file')}"),
        ("upstream", _upstream(report.upstream, report.upstream_mode)),
        ("data", report.data_dir),
        ("up", duration(report.uptime)),
    ]
    out(table(("", ""), rows).split("\n", 1)[1])
    return EXIT_OK


def _upstream(url: str | None, mode: str) -> str:
    if mode == "none" or url is None:
        return "none (projects not hosted here are not found)"
    return f"{mode} to {url}"


def _watcher_line(watcher: p.WatcherInfo, now: float) -> str:
    if not watcher.available:
        return watcher.message or "not available in this insidersd"
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


def _policy(repo: p.RepoInfo) -> str:
    if repo.versions == "since":
        return f"since {repo.since}"
    return repo.versions


def _repo_table(repos: Sequence[p.RepoInfo], now: float, indent: str = "") -> str:
    rows = [
        (
            r.name,
            r.source,
            _policy(r),
            ago(r.last_check, now),
            r.newest_tag or "-",
            r.last_published or "-",
            _repo_state(r),
        )
        for r in repos
    ]
    headers = ("NAME", "SOURCE", "VERSIONS", "CHECKED", "NEWEST TAG", "PUBLISHED", "STATE")
    return table(headers, rows, indent)


def _repo_state(r: p.RepoInfo) -> str:
    if r.last_error or any(v.status == "failed" for v in r.version_states):
        return "failing"
    if r.last_check and not r.newest_tag:
        return "no version tag"
    return "ok" if r.last_check else "-"


def _repo_errors(repos: Sequence[p.RepoInfo], now: float) -> None:
    for r in repos:
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


def cmd_repos_list(ctx: Context) -> int:
    reply = ctx.call(p.ListRepos(), p.RepoList)
    if ctx.json:
        ctx.emit(reply)
    elif not reply.repos:
        note("no repositories are watched; add one with: insidersctl repos add OWNER/REPO:DIST")
    else:
        out(_repo_table(reply.repos, reply.now))
        _repo_errors(reply.repos, reply.now)
    return EXIT_OK


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
    reply = ctx.call(request, p.RepoAdded)
    if ctx.json:
        ctx.emit(reply)
        return EXIT_OK
    repo = reply.repo
    targets = (["this index"] if repo.local else []) + list(repo.publish_to)
    out(
        f"added {repo.name} from {repo.source}: {_policy(repo)} version(s), "
        f"published to {', '.join(targets)}"
    )
    if not reply.watcher:
        note(
            "note: this insidersd has no watcher yet: the repository is recorded, "
            "and nothing checks or builds it until a version with the watcher runs"
        )
    return EXIT_OK


def cmd_repos_remove(ctx: Context) -> int:
    reply = ctx.call(p.RemoveRepo(name=ctx.args.name), p.RepoRemoved)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(f"removed {reply.repo.name} ({reply.repo.source}); its published files stay")
    return EXIT_OK


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


def cmd_watcher(ctx: Context) -> int:
    action = ctx.args.action
    reply = ctx.call(p.WatcherControl(action=action), p.WatcherReport)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(f"watcher: {_watcher_line(reply.watcher, reply.now)}")
    return EXIT_OK


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
        return logs.read_file(path, lines=lines if args.lines_given else None, follow=args.follow)
    try:
        keep = logs.Filter(
            priority=logs.parse_priority(args.priority) if args.priority else None,
            # journalctl reads --since and --until itself (and knows more forms).
            since=logs.parse_time(args.since) if args.since and not where.journal else None,
            until=logs.parse_time(args.until) if args.until and not where.journal else None,
            component=getattr(args, "component", None),
        )
    except logs.LogOptionError as error:
        raise Usage(str(error)) from None
    return logs.show_log(
        where,
        lines=lines,
        follow=args.follow,
        keep=keep,
        as_json=ctx.json,
        since_text=args.since,
        until_text=args.until,
    )


def cmd_completion(ctx: Context) -> int:
    from insidersctl.completion import script

    out(script(ctx.args.shell, parser()).rstrip("\n"))
    return EXIT_OK


def cmd_reload(ctx: Context) -> int:
    reply = ctx.call(p.Reload(), p.Reloaded)
    if ctx.json:
        ctx.emit(reply)
    else:
        note("insidersd reloaded its configuration")
        if reply.restart_needed:
            note(f"changed, takes effect at restart: {', '.join(reply.restart_needed)}")
    return EXIT_OK


def cmd_tokens_list(ctx: Context) -> int:
    reply = ctx.call(p.ListTokens(), p.TokenList)
    if ctx.json:
        ctx.emit(reply)
    elif not reply.tokens:
        note("no tokens; make one with: insidersctl tokens create NAME")
    else:
        rows = [
            (
                t.name,
                t.scope,
                ", ".join(t.projects) or ("all" if t.scope == "upload" else "-"),
                _expiry(t.expires, reply.now),
                ago(t.last_used, reply.now),
                ago(t.created, reply.now),
            )
            for t in reply.tokens
        ]
        out(table(("NAME", "SCOPE", "PROJECTS", "EXPIRES", "LAST USED", "CREATED"), rows))
    return EXIT_OK


def _expiry(expires: float | None, now: float) -> str:
    if expires is None:
        return "never"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return f"expired {when}" if expires <= now else when


def cmd_tokens_create(ctx: Context) -> int:
    from insidersctl.expiry import BadExpiry, parse_expiry  # here: status must not import it

    args = ctx.args
    try:
        expires = parse_expiry(args.expires) if args.expires is not None else None
    except BadExpiry as error:
        raise Usage(str(error)) from None
    request = p.CreateToken(
        name=args.name, scope=args.scope, projects=tuple(args.projects), expires=expires
    )
    reply = ctx.call(request, p.TokenCreated)
    if ctx.json:
        ctx.emit(reply)
    else:
        # The secret alone on stdout, so that TOKEN=$(insidersctl tokens create ci) works.
        note(f"token {reply.token.name} ({reply.token.scope}); it is shown only this once:")
        out(reply.secret)
    return EXIT_OK


def cmd_tokens_revoke(ctx: Context) -> int:
    reply = ctx.call(p.RevokeToken(name=ctx.args.name), p.TokenRevoked)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(f"revoked token {reply.name}")
    return EXIT_OK


def cmd_projects_list(ctx: Context) -> int:
    reply = ctx.call(p.ListProjects(), p.ProjectList)
    if ctx.json:
        ctx.emit(reply)
    elif not reply.projects:
        note("no projects are hosted here yet")
    else:
        rows = [
            (
                project.name + (f" ({project.status})" if project.status != "active" else ""),
                project.latest or "-",
                str(project.versions),
                str(project.files)
                + (f" ({project.yanked_files} yanked)" if project.yanked_files else ""),
                size(project.size),
                ago(project.last_upload, reply.now),
            )
            for project in reply.projects
        ]
        out(table(("NAME", "LATEST", "VERSIONS", "FILES", "SIZE", "UPLOADED"), rows))
    return EXIT_OK


def cmd_projects_show(ctx: Context) -> int:
    reply = ctx.call(p.ShowProject(name=ctx.args.name), p.ProjectDetail)
    if ctx.json:
        ctx.emit(reply)
        return EXIT_OK
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
    return EXIT_OK


def cmd_projects_status(ctx: Context) -> int:
    args = ctx.args
    request = p.SetProjectStatus(name=args.name, status=args.status, reason=args.reason)
    reply = ctx.call(request, p.ProjectStatusSet)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(f"{reply.name} is {reply.status}" + (f": {reply.reason}" if reply.reason else ""))
    return EXIT_OK


def cmd_yank(ctx: Context) -> int:
    args = ctx.args
    request: p.Yank | p.Unyank
    if args.command == "yank":
        request = p.Yank(project=args.project, version=args.version, reason=args.reason)
    else:
        request = p.Unyank(project=args.project, version=args.version)
    reply = ctx.call(request, p.YankDone)
    if ctx.json:
        ctx.emit(reply)
        return EXIT_OK
    verb = "yanked" if reply.yanked else "unyanked"
    if reply.changed:
        out(f"{verb} {reply.project} {reply.version} ({plural(reply.changed, 'file')})")
    else:
        out(f"{reply.project} {reply.version} was {verb} already")
    return EXIT_OK


def cmd_remove(ctx: Context) -> int:
    args = ctx.args
    if (args.version is None) == (args.file is None):
        raise Usage("give either a VERSION or --file FILENAME")
    what = {"project": args.project, "version": args.version, "filename": args.file}
    if not args.yes:
        preview = ctx.call(p.Remove(**what, dry_run=True), p.Removed)
        if not sys.stdin.isatty():
            note(
                "insidersctl: removing files needs a confirmation: "
                "run it in a terminal or pass --yes"
            )
            return EXIT_FAILED
        listing = "\n".join(f"  {name}" for name in preview.files)
        sys.stderr.write(
            f"remove {plural(len(preview.files), 'file')} of {preview.project} from the index?\n"
            f"{listing}\nThis cannot be undone. [y/N] "
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
            note("nothing removed")
            return EXIT_FAILED
    reply = ctx.call(p.Remove(**what), p.Removed)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(f"removed {plural(len(reply.files), 'file')} of {reply.project}:")
        for name in reply.files:
            out(f"  {name}")
    return EXIT_OK


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


def _mirror_table(mirrors: Sequence[p.MirrorInfo], now: float, indent: str = "") -> str:
    rows = [
        (m.name, m.kind, m.location, _mirror_state(m, now), ago(m.last_sync, now)) for m in mirrors
    ]
    return table(("NAME", "KIND", "WHERE", "STATE", "CURRENT"), rows, indent=indent)


def _mirror_errors(mirrors: Sequence[p.MirrorInfo], now: float) -> None:
    for mirror in mirrors:
        if mirror.last_error:
            note(f"mirror {mirror.name}: {mirror.last_error} ({ago(mirror.last_error_at, now)})")


def cmd_mirrors_list(ctx: Context) -> int:
    reply = ctx.call(p.ListMirrors(), p.MirrorList)
    if ctx.json:
        ctx.emit(reply)
    elif not reply.mirrors:
        note("no mirror targets: add a [mirrors.NAME] section to the configuration")
    else:
        out(_mirror_table(reply.mirrors, reply.now))
        _mirror_errors(reply.mirrors, reply.now)
    return EXIT_OK


def cmd_mirrors_sync(ctx: Context) -> int:
    reply = ctx.call(p.SyncMirror(name=ctx.args.name), p.MirrorSynced, long=True)
    if ctx.json:
        ctx.emit(reply)
    else:
        out(
            f"mirror {reply.mirror.name} is current: {plural(reply.files, 'file')} and "
            f"{plural(reply.pages, 'page')} written, {reply.deleted} removed "
            f"in {reply.seconds:.1f} s"
        )
    return EXIT_OK


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
    socket = group.add_argument(
        "--socket",
        metavar="PATH",
        default=default if suppress else None,
        help="the control socket (default: $INSIDERS_SOCKET, else where insidersd puts it)",
    )
    completes(socket, "file")
    runtime = group.add_argument(
        "--runtime-dir",
        metavar="DIR",
        default=default if suppress else None,
        help="the daemon's runtime directory (as insidersd --runtime-dir)",
    )
    completes(runtime, "dir")
    config = group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default if suppress else None,
        help="the daemon's config file, to read paths.runtime-dir from",
    )
    completes(config, "file")
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


class _BadLine(Exception):
    pass


class _Quiet(argparse.ArgumentParser):
    """The partial parser: an error means "ask the full parser", which says it properly."""

    def error(self, message: str) -> NoReturn:
        raise _BadLine(message)


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
        except _BadLine:
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
