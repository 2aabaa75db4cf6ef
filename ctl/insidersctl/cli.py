"""insidersctl's command line: parse it, run the command it names (commands.py), exit.

Exit status: 0 done, 1 refused or failed, 2 usage error, 3 daemon not reachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from insidersctl import __version__
from insidersctl import protocol as p
from insidersctl.commands import (
    cmd_cache_fetch,
    cmd_cache_prune,
    cmd_cache_status,
    cmd_logs,
    cmd_mirrors_list,
    cmd_mirrors_sync,
    cmd_mirrors_verify,
    cmd_overview,
    cmd_projects_list,
    cmd_projects_show,
    cmd_projects_status,
    cmd_reload,
    cmd_remove,
    cmd_repos_add,
    cmd_repos_list,
    cmd_repos_remove,
    cmd_repos_set,
    cmd_server_disable,
    cmd_server_enable,
    cmd_server_start,
    cmd_server_status,
    cmd_server_stop,
    cmd_status,
    cmd_tokens_create,
    cmd_tokens_list,
    cmd_tokens_revoke,
    cmd_update,
    cmd_watcher,
    cmd_yank,
    unreachable_message,
)
from insidersctl.context import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Context,
    note,
    out,
)
from insidersctl.errors import BadLine, ClientError, DaemonUnreachable, Refused, Usage
from insidersctl.output import to_json


def cmd_completion(ctx: Context) -> int:
    from insidersctl.completion import script

    out(script(ctx.args.shell, parser()).rstrip("\n"))
    return EXIT_OK


# -- the command line --------------------------------------------------------------------------


# The title of the options every command takes (the man page says them once, under it).
SHARED_OPTIONS = "connection and output"


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options taken before and after the command: `--json status` is `status --json`."""
    default = argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group(SHARED_OPTIONS)
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
    """A command word with actions under it; without one it runs `default` (`insidersctl repos`
    lists, as bare `systemctl` does), which therefore takes no arguments of its own."""

    __slots__ = ("commands", "default", "help")

    def __init__(self, help: str, commands: dict[str, Command], default: str) -> None:
        self.help = help
        self.commands = commands
        self.default = default


def _versions(sub: argparse.ArgumentParser, *, all_help: str, newest: bool) -> None:
    """Which version tags a repository builds, as repos add and repos set both take it: --all or
    --since VERSION (or, to change an earlier choice back, --newest)."""
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help=all_help)
    which.add_argument("--since", metavar="VERSION", help="build every version from VERSION on")
    if newest:
        which.add_argument("--newest", action="store_true", help="build the newest version tag")


def _publish_to(sub: argparse.ArgumentParser, help: str, *, default: list[str] | None) -> None:
    """The other indexes of the config a repository's builds are uploaded to (repeatable)."""
    sub.add_argument("--publish-to", metavar="NAME", action="append", default=default, help=help)


def _repos_add(sub: argparse.ArgumentParser) -> None:
    spec = sub.add_argument(
        "spec",
        metavar="SPEC",
        help="OWNER/REPO:DIST (GitHub), URL:DIST (https, ssh, git, file or git@host:path), "
        "or PATH:DIST; :DIST may be left out for a local repository whose pyproject.toml names it",
    )
    completes(spec, "dir")  # the local repositories; the other forms are typed
    _versions(sub, all_help="build every version tag, not the newest", newest=False)
    _publish_to(sub, "also upload to this index of the config (repeatable)", default=[])
    sub.add_argument(
        "--no-local",
        dest="local",
        action="store_false",
        help="publish to the --publish-to targets only, not to this index",
    )


def _repos_set(sub: argparse.ArgumentParser) -> None:
    name = sub.add_argument("name", metavar="NAME", help="its distribution name or its source")
    completes(name, "repos")
    _versions(sub, all_help="build every version tag", newest=True)
    # No default: without the option, set leaves the repository's list as it is.
    _publish_to(
        sub, "upload to this index of the config (repeatable; replaces the list)", default=None
    )
    local = sub.add_mutually_exclusive_group()
    local.add_argument(
        "--local", dest="local", action="store_true", default=None, help="publish to this index"
    )
    local.add_argument(
        "--no-local", dest="local", action="store_false", help="do not publish to this index"
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


# journalctl's names of the syslog priorities, for completion (logs.PRIORITIES is what -p reads:
# importing logs here would slow every start).
PRIORITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


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
        help="the last N entries (default 50, or all with --since or --until; 0: none, "
        "all: every one)",
    )
    sub.set_defaults(lines_given=False)
    priority = sub.add_argument(
        "-p",
        "--priority",
        metavar="PRIORITY",
        help="entries of this priority or a more urgent one: emerg, alert, crit, err, warning, "
        "notice, info, debug, 0-7, or a range FROM..TO",
    )
    completes(priority, "choices:" + " ".join(PRIORITY_NAMES))
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


def _mirrors_sync(sub: argparse.ArgumentParser) -> None:
    _name("NAME", "the [mirrors.NAME] of the configuration")(sub)
    accept = sub.add_mutually_exclusive_group()
    for flag, meaning in (
        (
            "--adopt",
            "take a target written from another store as this store's (when nothing is lost)",
        ),
        (
            "--force",
            "make the target match the store though it holds more: what only it holds is lost",
        ),
    ):
        accept.add_argument(flag, action="store_true", help=meaning)


def _remove(sub: argparse.ArgumentParser) -> None:
    completes(sub.add_argument("project", metavar="PROJECT"), "projects")
    sub.add_argument("version", metavar="VERSION", nargs="?", help="every file of it")
    sub.add_argument("--file", metavar="FILENAME", help="just this file")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _cache_prune(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--older-than", metavar="AGE", help="only files last used longer ago (90m, 12h, 30d, 2w)"
    )
    sub.add_argument("names", metavar="NAME", nargs="*", help="only these projects' files")


def _cache_fetch(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "requirements", metavar="REQUIREMENT", nargs="*", help="NAME or NAME==VERSION (PEP 508)"
    )
    completes(
        sub.add_argument(
            "-r",
            "--requirement",
            dest="files",
            metavar="FILE",
            action="append",
            default=[],
            help="a requirements file (pip freeze, uv pip compile): every line in it",
        ),
        "file",
    )
    sub.add_argument(
        "--platform",
        dest="platforms",
        metavar="TAG",
        action="append",
        default=[],
        help="only wheels for this platform tag (and pure ones); repeat for more; "
        "default: every wheel",
    )


def _server_scope(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--user",
        action="store_true",
        help="your own units (~/.config/systemd/user, systemctl --user); "
        "without it the system's (/etc/systemd/system, as root)",
    )


def _server_enable(sub: argparse.ArgumentParser) -> None:
    _server_scope(sub)
    sub.add_argument(
        "--force", action="store_true", help="replace unit files that insidersctl did not write"
    )
    start = sub.add_mutually_exclusive_group()
    start.add_argument(
        "--now",
        dest="no_start",
        action="store_false",
        help="start it now too, as systemctl enable --now (the default)",
    )
    start.add_argument(
        "--no-start",
        action="store_true",
        help="enable it only: it starts at the next boot or login",
    )
    sub.set_defaults(no_start=False)  # --now's store_false would make True the default


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
            "enable": Command(
                cmd_server_enable,
                "write the systemd units for this installation's insidersd, enable and start it",
                _server_enable,
            ),
            "disable": Command(
                cmd_server_disable,
                "stop and disable the units; remove the files server enable wrote",
                _server_scope,
            ),
            "logs": Command(cmd_logs, "the log of the index alone", _component_logs("server")),
        },
        default="status",
    ),
    "repos": Group(
        "the watched git repositories",
        {
            "add": Command(
                cmd_repos_add, "watch a repository and publish its version tags", _repos_add
            ),
            "list": Command(cmd_repos_list, "the watched repositories and their last results"),
            "set": Command(
                cmd_repos_set, "change which versions a repository builds, or where", _repos_set
            ),
            "remove": Command(
                cmd_repos_remove,
                "stop watching a repository",
                _name("NAME", "its distribution name or its source", "repos"),
            ),
        },
        default="list",
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
        default="status",
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
        default="list",
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
        default="list",
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
                _mirrors_sync,
            ),
            "verify": Command(
                cmd_mirrors_verify,
                "read back every file a target's manifests name and check its sha256",
                _name("NAME", "the [mirrors.NAME] of the configuration"),
            ),
        },
        default="list",
    ),
    "cache": Group(
        'the upstream\'s files kept by cache mode ([upstream] mode = "cache")',
        {
            "status": Command(cmd_cache_status, "its size, files, hit rate and oldest entry"),
            "prune": Command(
                cmd_cache_prune, "drop cached files (all, or by age and project)", _cache_prune
            ),
            "fetch": Command(
                cmd_cache_fetch,
                "fill the cache ahead of time, for installs without the upstream",
                _cache_fetch,
            ),
        },
        default="status",
    ),
}

# Options that take a value: what follows them is not a command word.
_VALUE_OPTIONS = frozenset(
    {"--socket", "--runtime-dir", "-c", "--config", "--timeout", "--since", "--publish-to"}
    | {"--scope", "--reason", "--file", "-n", "--lines", "-p", "--priority", "--until", "--build"}
    | {"--version"}
    | {"--project", "--expires"}
    | {"--older-than", "-r", "--requirement", "--platform"}
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
        group = commands.add_parser(
            name,
            help=entry.help,
            description=f"{entry.help}; without an ACTION: {name} {entry.default}",
            parents=shared,
        )
        actions = group.add_subparsers(dest="action", metavar="[ACTION]")
        # After add_subparsers: its own default (None) would win over one set before.
        group.set_defaults(handler=entry.commands[entry.default].handler, action=entry.default)
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
        return _fail(ctx, "unreachable", unreachable_message(error), EXIT_UNREACHABLE)
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
