"""`insidersctl completion bash|zsh|fish`: the scripts, run by the real shells.

bash and zsh: the script is sourced in a real shell, its completion function is called with
COMP_WORDS and COMP_CWORD set as the shell sets them at a TAB, and COMPREPLY is read back. fish:
its own completion engine answers `complete -C LINE`. Names that only the daemon knows come from
a real daemon, and nothing (no error either) when it is down.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from insidersctl.logs import PRIORITIES
from tests.support import BIN, Daemon, isolated_env, make_wheel, wheel_filename

INSIDERSCTL = BIN / "insidersctl"
COMMANDS = {
    "status",
    "server",
    "repos",
    "update",
    "watcher",
    "logs",
    "reload",
    "tokens",
    "projects",
    "mirrors",
    "cache",
}


def script(home: Path, shell: str) -> Path:
    result = subprocess.run(
        [str(INSIDERSCTL), "completion", shell],
        env=isolated_env(home),
        capture_output=True,
        text=True,
        check=True,
    )
    path = home / f"completion.{shell}"
    path.write_text(result.stdout)
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("completion")
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    env = isolated_env(home)
    for command in (
        ["repos", "add", "o/first:first-repo"],
        ["repos", "add", "o/second:second-repo"],
        ["tokens", "create", "ci-token"],
    ):
        subprocess.run([str(INSIDERSCTL), *command], env=env, check=True, capture_output=True)
    wheel = home / wheel_filename("hosted-one", "1.0")
    wheel.write_bytes(make_wheel("hosted-one", "1.0"))
    assert daemon.upload(wheel).status_code == 200
    yield daemon
    daemon.stop()


def bash_complete(home: Path, line: str, shell: str = "bash") -> list[str]:
    """What the completion function offers for `line` (the cursor at its end)."""
    words = shlex.split(line) + ([""] if line.endswith(" ") or not line else [])
    words[0] = str(INSIDERSCTL)
    array = " ".join(shlex.quote(w) for w in words)
    setup = "autoload -U compinit && compinit -u; " if shell == "zsh" else ""
    program = (
        f"{setup}source {shlex.quote(str(script(home, shell)))}; "
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _insidersctl; "
        # NUL after each element: a word the function got wrong ("bash\nzsh") stays one.
        'printf "%s\\0" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        [shell, "-c", program], env=isolated_env(home), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    offered = sorted(word for word in result.stdout.split("\0") if word)
    if shell == "zsh":
        # bashcompinit's compgen leaves matching the typed prefix to zsh's compadd.
        offered = [word for word in offered if word.startswith(words[-1])]
    return offered


CASES = [
    ("insidersctl ", COMMANDS | {"yank", "unyank", "remove", "completion"}),
    ("insidersctl re", {"repos", "reload", "remove"}),
    ("insidersctl repos ", {"add", "list", "remove", "set"}),
    ("insidersctl server ", {"status", "start", "stop", "logs", "enable", "disable"}),
    ("insidersctl server enable --", {"--user", "--force", "--now", "--no-start", "--help"}
     | {"--json", "--socket", "--runtime-dir", "--config", "--timeout"}),
    ("insidersctl repos remove ", {"first-repo", "second-repo"}),
    ("insidersctl update first-repo s", {"second-repo"}),
    ("insidersctl logs --build ", {"first-repo", "second-repo"}),
    ("insidersctl tokens revoke ", {"default", "ci-token"}),
    ("insidersctl projects show ", {"hosted-one"}),
    ("insidersctl yank h", {"hosted-one"}),
    ("insidersctl tokens create x --scope ", {"upload", "read"}),
    ("insidersctl completion ", {"bash", "zsh", "fish"}),
    ("insidersctl logs -p ", set(PRIORITIES)),
    ("insidersctl watcher logs --priority w", {"warning"}),
    ("insidersctl logs --p", {"--priority"}),
    ("insidersctl update --", {"--force", "--version", "--wait", "--no-wait", "--help", "--json"}
     | {"--socket", "--runtime-dir", "--config", "--timeout"}),
    # Values of options are skipped: what follows is a command again.
    ("insidersctl -c some.toml --timeout 5 to", {"tokens"}),
    ("insidersctl --socket /nowhere.sock status --j", {"--json"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_bash_completion(daemon: Daemon, line: str, expected: set[str]) -> None:
    assert set(bash_complete(daemon.home, line)) == expected


def test_bash_completes_paths(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "conf.toml").write_text("")
    (tmp_path / "rundir").mkdir()
    assert bash_complete(daemon.home, f"insidersctl --config {tmp_path}/con") == [
        f"{tmp_path}/conf.toml"
    ]
    assert bash_complete(daemon.home, f"insidersctl --runtime-dir {tmp_path}/") == [
        f"{tmp_path}/rundir"
    ]
    # SPEC of `repos add` is most often a local repository: a directory.
    assert bash_complete(daemon.home, f"insidersctl repos add {tmp_path}/") == [
        f"{tmp_path}/rundir"
    ]
    assert bash_complete(daemon.home, f"insidersctl repos add --all {tmp_path}/r") == [
        f"{tmp_path}/rundir"
    ]


def test_no_daemon_no_names_and_no_noise(tmp_path: Path) -> None:
    assert bash_complete(tmp_path, "insidersctl repos remove ") == []
    assert set(bash_complete(tmp_path, "insidersctl repos ")) == {"add", "list", "remove", "set"}
    result = subprocess.run(
        [str(INSIDERSCTL), "__complete", "repos"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# readline as a person has it: list the matches at the first TAB, without asking or paging.
INPUTRC = """\
set show-all-if-ambiguous on
set completion-query-items 0
set page-completions off
set bell-style none
set enable-bracketed-paste off
"""


def interactive_bash(home: Path, cwd: Path, keys: str, until: str) -> str:
    """What a real `bash -i` on a terminal shows for `keys` typed (TAB included), read until
    `until` appears. insidersctl is a function there that prints its arguments (ARGS<a><b>), so
    that what completion made of the line is seen; `__complete` still reaches the real one."""
    inputrc = home / "inputrc"
    inputrc.write_text(INPUTRC)
    env = isolated_env(home, INPUTRC=str(inputrc), TERM="dumb", PATH=f"{BIN}:/usr/bin:/bin")
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 500, 0, 0))
    shell = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    os.close(secondary)
    setup = (
        f"source {shlex.quote(str(script(home, 'bash')))}; PS1='>''> '; "
        'insidersctl() { if [[ $1 == __complete ]]; then command insidersctl "$@"; '
        "else printf 'ARGS'; printf '<%s>' \"$@\"; echo; fi; }\n"
    )

    def read_until(text: str) -> str:
        output = b""
        deadline = time.monotonic() + 20
        while text.encode() not in output:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([primary], [], [], left)[0]:
                break
            try:
                output += os.read(primary, 65536)
            except OSError:  # EIO: the shell is gone
                break
        return output.decode(errors="replace").replace("\r", "")

    try:
        os.write(primary, setup.encode())
        read_until("\n>> ")  # the new prompt: the script is read
        os.write(primary, keys.encode())
        shown = read_until(until)
        os.write(primary, b"\x15exit\n")
        shell.wait(20)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(primary)
    return shown


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_tab_in_an_interactive_bash(daemon: Daemon, tmp_path: Path) -> None:
    # Several matches: listed, one a word (not one word "bash<newline>zsh<newline>fish").
    shown = interactive_bash(daemon.home, tmp_path, "insidersctl completion \t", "zsh")
    assert re.search(r"\bbash +fish +zsh\b", shown), shown
    shown = interactive_bash(daemon.home, tmp_path, "insidersctl logs -p \t", "debug")
    assert re.search(r"\balert +crit +debug +emerg +err +info +notice +warning\b", shown), shown
    # One match: put in the line, then the command runs with it.
    (tmp_path / "my repo").mkdir()
    typed = {
        "insidersctl logs -p w\t\n": "<logs><-p><warning>",
        "insidersctl tokens create x --scope r\t\n": "<tokens><create><x><--scope><read>",
        # A directory ends with / (the next word goes on), a space in its name is quoted.
        "insidersctl repos add ./my\tX\n": "<repos><add><./my repo/X>",
        f"insidersctl -c {tmp_path}/my\tx.toml status\n": f"<-c><{tmp_path}/my repo/x.toml>",
        "insidersctl repos remove fi\t\n": "<repos><remove><first-repo>",
    }
    for keys, expected in typed.items():
        shown = interactive_bash(daemon.home, tmp_path, keys, "\n>> ")
        assert f"ARGS{expected}" in shown, (keys, shown)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (make shells)")
@pytest.mark.parametrize(("line", "expected"), CASES[:6] + CASES[10:14] + CASES[-2:])
def test_zsh_completion(daemon: Daemon, line: str, expected: set[str]) -> None:
    assert set(bash_complete(daemon.home, line, shell="zsh")) == expected


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (make shells)")
@pytest.mark.parametrize(("line", "expected"), CASES[:14])
def test_fish_completion(daemon: Daemon, line: str, expected: set[str]) -> None:
    source = script(daemon.home, "fish")
    env = isolated_env(daemon.home, PATH=f"{BIN}:/usr/bin:/bin")
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {source}; complete -C {shlex.quote(line)}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    offered = {entry.split("\t")[0] for entry in result.stdout.splitlines()}
    # fish completes the word being typed: the ones after the last space
    assert offered == expected, result.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (make shells)")
def test_fish_completes_a_repository_directory(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "rest.txt").write_text("")
    source = script(daemon.home, "fish")
    line = f"insidersctl repos add {tmp_path}/re"
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {source}; complete -C {shlex.quote(line)}"],
        env=isolated_env(daemon.home, PATH=f"{BIN}:/usr/bin:/bin"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [entry.split("\t")[0] for entry in result.stdout.splitlines()] == [f"{tmp_path}/repo/"]
