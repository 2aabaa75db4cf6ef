"""insidersctl's commands: parse the command line, ask insidersd, print the answer.

Exit status: 0 done, 1 refused or failed, 2 usage error, 3 daemon not reachable.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
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
from insidersctl.output import ago, duration, plural, size, table, to_json
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
    ) -> R:
        """The reply to `request`, of type `expect`; `long`: no time limit between messages."""
        timeout = None if long else self.timeout
        reply = self.connect().call(request, progress=progress, timeout=timeout)
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
    out(table(("", ""), rows).split("\n", 1)[1])
    if report.repos:
        out(_repo_table(report.repos, report.now, indent="  "))
        _repo_errors(report.repos, report.now)
    if report.mirrors:
        out(f"mirrors   {len(report.mirrors)}")
        out(_mirror_table(report.mirrors, report.now, indent="  "))
        _mirror_errors(report.mirrors, report.now)
    return EXIT_OK


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
            "failing" if r.last_error else "ok" if r.last_check else "-",
        )
        for r in repos
    ]
    headers = ("NAME", "SOURCE", "VERSIONS", "CHECKED", "NEWEST TAG", "PUBLISHED", "STATE")
    return table(headers, rows, indent)


def _repo_errors(repos: Sequence[p.RepoInfo], now: float) -> None:
    for r in repos:
        if r.last_error:
            where = f" (log: {r.log})" if r.log else ""
            out(f"{r.name}: {ago(r.last_error_at, now, 'at some point')}: {r.last_error}{where}")


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

    def show(event: p.Progress) -> None:
        if ctx.json:
            print(to_json(event, indent=0), flush=True)
            return
        version = f" {event.version}" if event.version else ""
        message = f": {event.message}" if event.message else ""
        log = f" (log: {event.log})" if event.log and event.stage == "failed" else ""
        print(f"{event.repo}: {event.stage}{version}{message}{log}", flush=True)

    request = p.Update(names=tuple(args.names), force=args.force, wait=not args.no_wait)
    report = ctx.call(request, p.UpdateReport, progress=show, long=True)
    if ctx.json:
        print(to_json(report, indent=0))
    elif report.queued:
        out("check queued; follow it with: insidersctl status")
    else:
        for result in report.results:
            if result.outcome == "published":
                line = f"published {', '.join(result.versions)}"
            elif result.outcome == "failed":
                line = f"FAILED: {result.error}" + (f" (log: {result.log})" if result.log else "")
            else:
                line = result.outcome
            out(f"{result.repo}: {line}")
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
    args = ctx.args
    if args.lines < 0:
        raise Usage("-n takes a count of lines, 0 or more")
    try:
        where = ctx.call(p.Logs(), p.LogsLocation)
    except DaemonUnreachable as error:
        # A daemon that is not running is when its log matters most: show the file if there is one.
        from insidersctl.logs import default_log_file

        path = default_log_file()
        if path is None:
            raise
        note(f"insidersctl: {error.reason}; its log file {path}:")
        where = p.LogsLocation(path=str(path))
    ctx.close()
    from insidersctl.logs import show_log

    return show_log(where, lines=args.lines, follow=args.follow)


def cmd_tokens_list(ctx: Context) -> int:
    reply = ctx.call(p.ListTokens(), p.TokenList)
    if ctx.json:
        ctx.emit(reply)
    elif not reply.tokens:
        note("no tokens; make one with: insidersctl tokens create NAME")
    else:
        rows = [(t.name, t.scope, ago(t.created, reply.now)) for t in reply.tokens]
        out(table(("NAME", "SCOPE", "CREATED"), rows))
    return EXIT_OK


def cmd_tokens_create(ctx: Context) -> int:
    reply = ctx.call(p.CreateToken(name=ctx.args.name, scope=ctx.args.scope), p.TokenCreated)
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
                project.name,
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
            ("yanked" + (f": {f.yanked_reason}" if f.yanked_reason else "")) if f.yanked else "",
        )
        for f in reply.files
    ]
    out(reply.name)
    out(table(("VERSION", "FILE", "SIZE", "UPLOADED", "YANKED"), rows, indent="  "))
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
    group.add_argument(
        "--socket",
        metavar="PATH",
        default=default if suppress else None,
        help="the control socket (default: $INSIDERS_SOCKET, else where insidersd puts it)",
    )
    group.add_argument(
        "--runtime-dir",
        metavar="DIR",
        default=default if suppress else None,
        help="the daemon's runtime directory (as insidersd --runtime-dir)",
    )
    group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default if suppress else None,
        help="the daemon's config file, to read paths.runtime-dir from",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default if suppress else 30.0,
        help="how long to wait for the daemon (default 30)",
    )
    return common


Configure = Callable[[argparse.ArgumentParser], None]


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


def _name(metavar: str, help: str | None = None) -> Configure:
    def configure(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("name", metavar=metavar, help=help)

    return configure


def _update(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("names", metavar="NAME", nargs="*", help="repositories (default: all)")
    sub.add_argument("--force", action="store_true", help="rebuild published versions too")
    sub.add_argument("--no-wait", action="store_true", help="queue the check and return at once")
    sub.add_argument(
        "--wait", action="store_false", dest="no_wait", help="show progress until done (default)"
    )


def _logs(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-f", "--follow", action="store_true", help="print new lines as they come")
    sub.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="default 50")


def _tokens_create(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--scope", choices=["upload", "read"], default="upload")


def _project_version(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("project", metavar="PROJECT")
    sub.add_argument("version", metavar="VERSION")


def _yank(sub: argparse.ArgumentParser) -> None:
    _project_version(sub)
    sub.add_argument("--reason", metavar="TEXT", help="shown to installers")


def _remove(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("project", metavar="PROJECT")
    sub.add_argument("version", metavar="VERSION", nargs="?", help="every file of it")
    sub.add_argument("--file", metavar="FILENAME", help="just this file")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


COMMANDS: dict[str, Command | Group] = {
    "status": Command(cmd_status, "the daemon, its index, watcher and repositories"),
    "server": Group(
        "the package index",
        {"status": Command(cmd_server_status, "the index's address, counts and upstream")},
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
                _name("NAME", "its distribution name or its source"),
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
        },
    ),
    "logs": Command(cmd_logs, "the daemon's log (journalctl under systemd)", _logs),
    "tokens": Group(
        "the index's access tokens",
        {
            "create": Command(
                cmd_tokens_create, "make a token; it is printed once", _tokens_create
            ),
            "list": Command(cmd_tokens_list, "the tokens (names and scopes, never secrets)"),
            "revoke": Command(cmd_tokens_revoke, "delete a token", _name("NAME")),
        },
    ),
    "projects": Group(
        "the hosted projects",
        {
            "list": Command(cmd_projects_list, "every hosted project"),
            "show": Command(cmd_projects_show, "the files of one project", _name("PROJECT")),
        },
    ),
    "yank": Command(cmd_yank, "mark a version yanked (PEP 592)", _yank),
    "unyank": Command(cmd_yank, "undo a yank", _project_version),
    "remove": Command(cmd_remove, "unpublish a version or one file", _remove),
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
    | {"--scope", "--reason", "--file", "-n", "--lines"}
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
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
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


def parse(argv: Sequence[str]) -> argparse.Namespace:
    if not {"-h", "--help", "--version"} & set(argv):
        try:
            return parser(command_words(argv), _Quiet).parse_args(argv)
        except _BadLine:
            pass  # the full parser below prints the error
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    ctx = Context(args)
    try:
        return int(args.handler(ctx))
    except Usage as error:
        note(f"insidersctl {args.command}: {error}")
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
