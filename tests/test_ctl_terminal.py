"""insidersctl on a terminal: the live view of `update --wait`, and when colours are used.

The client runs on a real pseudo-terminal (the stdlib `pty` module) against a real daemon that
builds real repositories; a real VT100 emulator (pyte) turns what it wrote into the screen a
person would see.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pyte
import pytest

from tests.projects import broken_pyproject, in_tree_backend_pyproject
from tests.support import (
    BIN,
    Daemon,
    GoSignal,
    git_project,
    isolated_env,
    run_ctl,
    tag_release,
)
from tests.test_watcher import wheelhouse

__all__ = ["wheelhouse"]  # the fixture, shared with tests/test_watcher.py

INSIDERSCTL = BIN / "insidersctl"
COLUMNS, LINES = 160, 40

# The in-tree backend of a build that waits for the test to open a gate: the live view is seen
# while it builds. The build sees none of the test's files: the gate is a loopback port
# (tests.support.GoSignal).
GATED_BACKEND = """\
wait_for_go()
from hatchling.build import *
"""


class Terminal:
    """insidersctl on a pseudo-terminal, its output read through a VT100 emulator."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.raw = b""
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        pid, fd = os.forkpty()
        if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            os.execve(str(INSIDERSCTL), [str(INSIDERSCTL), *argv], env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.status: int | None = None

    def read_until(self, done: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not seen in time; the screen:\n{self.text()}"
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                _, status = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(status)
                assert done(), f"insidersctl ended ({self.status}); the screen:\n{self.text()}"
                return
            self.raw += chunk
            self.stream.feed(chunk)

    def wait(self) -> int:
        self.read_until(lambda: self.status is not None)
        os.close(self.fd)
        assert self.status is not None
        return self.status

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def line_with(self, word: str) -> int:
        return next(i for i, line in enumerate(self.screen.display) if word in line)


@pytest.fixture
def daemon(tmp_path: Path, wheelhouse: Daemon) -> Iterator[Daemon]:
    config = tmp_path / "d" / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[watcher]\nenabled = false\nmax-builds = 4\n")
    daemon = Daemon(tmp_path / "d", ["--upstream", wheelhouse.index]).start()
    yield daemon
    daemon.stop()


def env_for(daemon: Daemon, **extra: str) -> dict[str, str]:
    env = isolated_env(daemon.home, TERM="xterm-256color")
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(name, None)
    return env | extra


def ctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(daemon, *args, env=env_for(daemon))


@pytest.fixture
def gate() -> Iterator[GoSignal]:
    signal = GoSignal()
    yield signal
    signal.close()


def add_repositories(daemon: Daemon, src: Path, gate: GoSignal) -> None:
    """A repository whose build waits for `gate` to open and one whose build fails."""
    gated = git_project(src, "gated", pyproject=in_tree_backend_pyproject("gated"))
    (gated / "backend.py").write_text(gate.code() + GATED_BACKEND)
    tag_release(gated, "1.0")
    broken = git_project(src, "broken", pyproject=broken_pyproject("broken"))
    tag_release(broken, "2.0")
    for spec in (f"{gated}:gated", f"{broken}:broken"):
        assert ctl(daemon, "repos", "add", spec).returncode == 0


def test_the_live_view_on_a_terminal(daemon: Daemon, tmp_path: Path, gate: GoSignal) -> None:
    add_repositories(daemon, tmp_path / "src", gate)
    log = daemon.data_dir / "logs" / "gated" / "1.0.log"
    term = Terminal(["update", "--wait"], env_for(daemon))

    # While gated builds: its line says so, with the version, the elapsed time and the log's
    # path on the line below, whole (to tail -f); broken has failed meanwhile.
    term.read_until(lambda: f"log: {log}" in term.text() and "failed" in term.text())
    row = term.line_with("gated ")
    building = r"gated\s+building\s+1\.0\s+\d:\d\d\s+python -m build"
    assert re.match(building, term.screen.display[row])
    assert term.screen.display[row + 1].strip() == f"log: {log}"
    assert log.exists()  # what the path names is there to be followed
    clock = re.search(r"\d:\d\d", term.screen.display[row])
    assert clock is not None
    # The same line is redrawn in place as time passes: the clock moves, no line is added.
    before = clock.group()
    term.read_until(lambda: before not in term.screen.display[term.line_with("gated ")])
    assert term.text().count("gated ") == 1
    # Colours: the stages are painted (the screen keeps the attributes of each cell).
    stage = term.screen.display[row].index("building")
    assert term.screen.buffer[row][stage].fg == "cyan"
    failed = term.line_with("broken ")
    assert term.screen.buffer[failed][term.screen.display[failed].index("failed")].fg == "red"

    gate.give()
    assert term.wait() == 1  # one repository failed
    screen = term.text()
    lines = screen.splitlines()
    assert re.match(r"gated\s+published\s+1\.0\s+\d:\d\d$", lines[term.line_with("gated ")])
    # The failure, said once, with its log path once.
    broken_log = daemon.data_dir / "logs" / "broken" / "2.0.log"
    assert screen.count("python -m build failed") == 1
    assert screen.count(str(broken_log)) == 1
    assert screen.count("log: ") == 1  # the finished build's log is no longer shown
    assert re.search(
        r"checked 2 repositories in \d:\d\d: 1 version published, 1 version failed$", screen
    )
    # The cursor is visible again at the end.
    assert term.raw.rfind(b"\x1b[?25h") > term.raw.rfind(b"\x1b[?25l")


def test_no_color_keeps_the_live_view_without_colours(
    daemon: Daemon, tmp_path: Path, gate: GoSignal
) -> None:
    add_repositories(daemon, tmp_path / "src", gate)
    gate.give()
    term = Terminal(["update"], env_for(daemon, NO_COLOR="1"))
    assert term.wait() == 1
    assert "checked 2 repositories" in term.text()
    assert b"\x1b[2K" in term.raw  # lines redrawn in place
    assert re.search(rb"\x1b\[[0-9;]*m", term.raw) is None  # and no colour at all


def test_a_pipe_and_json_get_lines_without_escapes(
    daemon: Daemon, tmp_path: Path, gate: GoSignal
) -> None:
    add_repositories(daemon, tmp_path / "src", gate)
    gate.give()
    log = daemon.data_dir / "logs" / "gated" / "1.0.log"
    broken_log = daemon.data_dir / "logs" / "broken" / "2.0.log"
    result = ctl(daemon, "update", "--wait")
    assert result.returncode == 1
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert f"gated: building 1.0: python -m build (v1.0) (log: {log})" in lines
    assert "gated: published 1.0" in lines
    # The failure once, its log once: in the result lines, not in the step lines too.
    [failure] = [line for line in lines if "failed" in line]
    assert failure.startswith("broken: FAILED: 2.0: python -m build failed (exit status 1)")
    assert failure.endswith(f" (log: {broken_log})")
    assert failure.count(str(broken_log)) == 1
    # Besides, once when the build started, to be followed.
    assert f"broken: building 2.0: python -m build (v2.0) (log: {broken_log})" in lines
    assert result.stdout.count(str(broken_log)) == 2

    # JSON on a terminal: the events and the report as JSON, one per line, no escapes.
    term = Terminal(["update", "--json", "--force", "gated"], env_for(daemon))
    assert term.wait() == 0
    output = term.raw.decode().replace("\r\n", "\n")
    assert "\x1b" not in output
    messages = [msgspec.json.decode(line) for line in output.splitlines() if line]
    assert [m["type"] for m in messages][-1] == "update"
    # --force rebuilds the published version: identical bytes, so nothing is published again.
    assert {m["stage"] for m in messages[:-1]} >= {"listing", "fetching", "building", "unchanged"}


def test_contradictory_flags_are_usage_errors(daemon: Daemon) -> None:
    result = ctl(daemon, "update", "--wait", "--no-wait")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_more_repositories_than_the_screen_has_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live view stays within the screen (else it could not redraw in place); the end lists
    every repository."""
    import io

    from insidersctl import protocol as p
    from insidersctl.progress import LiveView
    from insidersctl.terminal import Terminal as Output

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "12")
    screen = pyte.Screen(80, 12)
    stream = pyte.Stream(screen)
    out = io.StringIO()
    view = LiveView(Output(out, env={}), now=lambda: 100.0)
    names = [f"repo-{i:02}" for i in range(30)]
    for name in names:
        view.event(p.Progress(repo=name, stage="listing"))
    for name in names[:27]:
        view.event(p.Progress(repo=name, stage="up-to-date"))
    view.event(p.Progress(repo="repo-27", stage="building", version="1.0", log="/l/27.log"))
    stream.feed(out.getvalue().replace("\n", "\r\n"))
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert shown[0] == "27 finished (0 published), …"
    assert [line.split()[0] for line in shown[1:]] == ["repo-27", "log:", "repo-28", "repo-29"]

    monkeypatch.setattr("sys.stdout", io.StringIO())
    view.finish(
        p.UpdateReport(results=tuple(p.RepoOutcome(repo=n, outcome="up-to-date") for n in names))
    )
    final = out.getvalue().rsplit("\x1b[J", 2)[-2]  # the last drawing
    assert [line for line in names if line in final] == names


@pytest.mark.parametrize(
    ("message", "log", "expected"),
    [
        # Daemons before the watcher's `log` field put the path in the message too.
        ("v2.0: python -m build failed (exit status 1); log: /l/2.0.log", "/l/2.0.log",
         "v2.0: python -m build failed (exit status 1)"),
        ("v2.0: build failed (log: /l/2.0.log)", "/l/2.0.log", "v2.0: build failed"),
        # Daemons with the field: the message is left as it is.
        ("v2.0: python -m build failed (exit status 1)", "/l/2.0.log",
         "v2.0: python -m build failed (exit status 1)"),
        ("git ls-remote failed: no route", None, "git ls-remote failed: no route"),
    ],
)  # fmt: skip
def test_a_failure_names_its_log_once(message: str, log: str | None, expected: str) -> None:
    from insidersctl import protocol as p
    from insidersctl.output import without_log
    from insidersctl.progress import result_line

    assert without_log(message, log) == expected
    line = result_line(p.RepoOutcome(repo="r", outcome="failed", error=message, log=log))
    assert line == f"r: FAILED: {expected}" + (f" (log: {log})" if log else "")


def test_term_dumb_gets_plain_lines(daemon: Daemon, tmp_path: Path, gate: GoSignal) -> None:
    add_repositories(daemon, tmp_path / "src", gate)
    gate.give()
    term = Terminal(["update"], env_for(daemon, TERM="dumb"))
    assert term.wait() == 1
    assert b"\x1b" not in term.raw
    assert "gated: published 1.0" in term.text().splitlines()


def test_follow_a_build_log_while_it_builds(daemon: Daemon, tmp_path: Path, gate: GoSignal) -> None:
    """`logs --build NAME -f`: what the live view's log line is for."""
    add_repositories(daemon, tmp_path / "src", gate)
    log = daemon.data_dir / "logs" / "gated" / "1.0.log"
    assert ctl(daemon, "update", "--no-wait", "gated").returncode == 0
    deadline = time.monotonic() + 120
    while not log.exists():
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.1)
    follower = Terminal(["logs", "--build", "gated", "-f"], env_for(daemon))
    follower.read_until(lambda: "gated" in follower.text() or "build" in follower.text())
    assert "Successfully built" not in follower.text()
    gate.give()  # the build goes on, and its end appears in the follower
    follower.read_until(lambda: "Successfully built" in follower.text())
    os.kill(follower.pid, signal.SIGINT)
    assert follower.wait() == 130
