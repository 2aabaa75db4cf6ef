"""Shell completion for insidersctl, generated from its argparse parser.

`insidersctl completion bash|zsh|fish` prints a script whose tables (commands, options, which
options take a value, what each argument is) come from the parser, so every command added to
cli.py is completed without more work. Names that only the daemon knows (repositories, tokens,
projects) are asked for at completion time with the hidden `insidersctl __complete KIND`, which
prints nothing when no daemon answers. An argument says what it completes to with an attribute
`complete` set to one of KINDS (cli.completes).

Written here rather than with a completion library: the client stays stdlib + msgspec, and the
scripts are a few tables and one walk over the words typed so far.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

# What an argument can complete to: names from the daemon, or paths.
DAEMON_KINDS = ("repos", "tokens", "projects")
KINDS = (*DAEMON_KINDS, "file", "dir")
SHELLS = ("bash", "zsh", "fish")


class Node:
    """One command level of the parser: its subcommands, options and positional arguments."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.commands: dict[str, str] = {}  # name -> help
        self.options: dict[str, str] = {}  # option string -> help
        self.values: dict[str, str] = {}  # option taking a value -> what it completes to
        self.positionals: list[tuple[str, bool]] = []  # (what it completes to, repeats)


def _kind(action: argparse.Action) -> str:
    kind: str | None = getattr(action, "complete", None)
    if kind:
        return kind
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        return "choices:" + " ".join(str(c) for c in action.choices)
    return ""


def walk(parser: argparse.ArgumentParser, path: str = "") -> list[Node]:
    """Every command level of `parser`, the top first."""
    node = Node(path)
    nodes = [node]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                if name not in helps:
                    continue  # a command without help is hidden
                node.commands[name] = helps[name]
                nodes += walk(sub, f"{path} {name}".strip())
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                node.options[option] = (action.help or "").replace("%%", "%")
                if action.nargs != 0:
                    node.values[option] = _kind(action)
        elif action.help != argparse.SUPPRESS:
            node.positionals.append((_kind(action), action.nargs in ("*", "+")))
    return nodes


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    nodes = walk(parser)
    if shell == "fish":
        return _fish(nodes)
    body = _bash(nodes)
    if shell == "zsh":
        # zsh runs bash completion functions through bashcompinit (after compinit).
        return (
            "# insidersctl completion for zsh: source <(insidersctl completion zsh) in ~/.zshrc,\n"
            "# after compinit.\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + body
        )
    return body


def _case(arms: dict[str, str], default: str = "return 1") -> str:
    lines = ['    case "$1" in']
    for key, value in arms.items():
        lines.append(f"        {shlex.quote(key)}) {value} ;;")
    lines.append(f"        *) {default} ;;")
    lines.append("    esac")
    return "\n".join(lines)


def _words(items: Any) -> str:
    return "echo " + shlex.quote(" ".join(items))


# The part of the bash script that is the same for every parser: fill in a completion of a kind,
# and walk the words typed so far (the tables above it answer the questions it asks).
_BASH_WALK = """\
_insidersctl_fill() {
    # One match a line (a path may have spaces); the choices are one line, split on spaces in
    # compgen's own subshell, so that its matches are still split on newlines here.
    local IFS=$'\\n'
    case "$1" in
        file|dir)
            # bash: quote the matches as paths, and end a directory with / instead of a space.
            [[ -n ${BASH_VERSION-} ]] && compopt -o filenames 2>/dev/null
            local what=-f
            [[ $1 == dir ]] && what=-d
            COMPREPLY=($(compgen "$what" -- "$cur")) ;;
        choices:*) COMPREPLY=($(IFS=' '; compgen -W "${1#choices:}" -- "$cur")) ;;
        repos|tokens|projects)
            COMPREPLY=($(compgen -W "$("$program" __complete "$1" 2>/dev/null)" -- "$cur")) ;;
    esac
}
_insidersctl() {
    [[ -n ${ZSH_VERSION-} ]] && setopt localoptions ksharrays
    local program=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]}
    local at="" word kind i skip=0 count=0
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((skip)); then
            skip=0
            continue
        fi
        case "$word" in
            --*=*) ;;
            -*) _insidersctl_value "$at" "$word" >/dev/null && skip=1 ;;
            *)
                if [[ " $(_insidersctl_commands "$at") " == *" $word "* ]]; then
                    at="${at:+$at }$word"
                    count=0
                else
                    count=$((count + 1))
                fi ;;
        esac
    done
    if ((skip)); then
        # The word is the value of the option before it.
        kind=$(_insidersctl_value "$at" "${COMP_WORDS[COMP_CWORD - 1]}")
        _insidersctl_fill "$kind"
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_insidersctl_options "$at")" -- "$cur"))
        return 0
    fi
    local commands
    commands=$(_insidersctl_commands "$at")
    if [[ -n $commands ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return 0
    fi
    kind=$(_insidersctl_positional "$at|$count") ||
        kind=$(_insidersctl_positional "$at|*") || return 0
    _insidersctl_fill "$kind"
    return 0
}
complete -F _insidersctl insidersctl
"""


def _bash(nodes: list[Node]) -> str:
    commands = {n.path: _words(n.commands) for n in nodes if n.commands}
    options = {n.path: _words(n.options) for n in nodes}
    values = {f"{n.path}|{o}": f"echo {shlex.quote(k)}" for n in nodes for o, k in n.values.items()}
    positionals = {}
    for n in nodes:
        for index, (kind, repeats) in enumerate(n.positionals):
            # PATH|N: the Nth argument; PATH|*: any after it, when it repeats (NAME...).
            positionals[f"{n.path}|{'*' if repeats else index}"] = f"echo {shlex.quote(kind)}"
    return f"""\
# insidersctl completion for bash (generated from its parser by `insidersctl completion bash`)
_insidersctl_commands() {{
{_case(commands, "return 0")}
}}
_insidersctl_options() {{
{_case(options, "return 0")}
}}
# The option takes a value: what it completes to (status 1: it takes none).
_insidersctl_value() {{
    set -- "$1|$2"
{_case(values)}
}}
_insidersctl_positional() {{
{_case(positionals)}
}}
{_BASH_WALK}"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(nodes: list[Node]) -> str:
    paths = [n.path for n in nodes if n.path]
    value_options = sorted({o for n in nodes for o in n.values})
    lines = [
        "# insidersctl completion for fish (generated from its parser by"
        " `insidersctl completion fish`)",
        "set -g __insidersctl_paths " + " ".join(_fish_quote(p) for p in paths),
        "set -g __insidersctl_value_options " + " ".join(value_options),
        "function __insidersctl_path",
        "    set -l tokens (commandline -opc)",
        "    set -e tokens[1]",
        "    set -l path ''",
        "    set -l skip 0",
        "    for token in $tokens",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $token",
        "            case '--*=*'",
        "            case '-*'",
        "                contains -- $token $__insidersctl_value_options; and set skip 1",
        "            case '*'",
        '                set -l next (string trim -- "$path $token")',
        "                contains -- $next $__insidersctl_paths; and set path $next",
        "        end",
        "    end",
        '    echo "$path"',
        "end",
        "function __insidersctl_at",
        '    test (__insidersctl_path) = "$argv[1]"',
        "end",
        "complete -c insidersctl -f",
    ]
    for node in nodes:
        at = f"-n {_fish_quote('__insidersctl_at ' + _fish_quote(node.path))}"
        for name, help in node.commands.items():
            lines.append(f"complete -c insidersctl {at} -a {name} -d {_fish_quote(help)}")
        for option, help in node.options.items():
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            kind = node.values.get(option)
            extra = ""
            if kind is not None:
                # -x: takes a value, and no file names unless the value is a path
                extra = (" -r" if kind == "file" else " -x") + _fish_arguments(kind)
            lines.append(f"complete -c insidersctl {at} {flag}{extra} -d {_fish_quote(help)}")
        for kind, _ in node.positionals:
            if kind:
                lines.append(f"complete -c insidersctl {at}{_fish_arguments(kind)}")
    return "\n".join(lines) + "\n"


def _fish_arguments(kind: str) -> str:
    if kind.startswith("choices:"):
        return f" -a {_fish_quote(kind.removeprefix('choices:'))}"
    if kind in DAEMON_KINDS:
        return f" -a {_fish_quote(f'(insidersctl __complete {kind} 2>/dev/null)')}"
    if kind == "file":
        return " -F"
    if kind == "dir":
        return " -a '(__fish_complete_directories)'"
    return ""


def daemon_names(kind: str, argv: list[str]) -> int:
    """`insidersctl __complete KIND`: the names the daemon knows, one a line; nothing if it is
    down (a completion must never print an error into the command line)."""
    from insidersctl import protocol as p
    from insidersctl.client import ClientError, Connection
    from insidersctl.paths import socket_candidates

    requests: dict[str, Any] = {
        "repos": (p.ListRepos(), lambda r: [x.name for x in r.repos]),
        "tokens": (p.ListTokens(), lambda r: [x.name for x in r.tokens]),
        "projects": (p.ListProjects(), lambda r: [x.name for x in r.projects]),
    }
    if kind not in requests:
        return 2
    request, names = requests[kind]
    for path in socket_candidates():
        try:
            with Connection.open(path, timeout=2.0) as connection:
                reply = connection.call(request, timeout=2.0)
        except ClientError:
            continue
        try:
            sys.stdout.write("".join(f"{name}\n" for name in names(reply)))
        except AttributeError:
            return 1  # a reply of another kind
        return 0
    return 0
