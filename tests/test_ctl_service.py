"""`insidersctl server start|stop` and bare `insidersctl`, against a real daemon.

Here no systemd runs (PID 1 is not systemd, no user manager answers), so `start` can only say how
to start insidersd, and `stop` stops a daemon run by hand with SIGTERM. What `start` and `stop` do
through a real systemd (systemctl --user start insiders, systemctl stop) is tested in
tests/systemd.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from tests.support import BIN, Daemon, isolated_env, run_python

INSIDERSCTL = BIN / "insidersctl"


def ctl(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSIDERSCTL), *args],
        env=isolated_env(home, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stop_a_daemon_run_by_hand_then_start_says_how(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    result = ctl(daemon.home, "server", "start")
    assert result.returncode == 0
    assert result.stdout.startswith(f"insidersd is running already (pid {pid}, ")

    result = ctl(daemon.home, "server", "stop")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"stopped insidersd (pid {pid}) with SIGTERM\n",
        "",
    )
    assert daemon.proc.wait(20) == 0  # a clean stop
    assert "SIGTERM: stopping" in daemon.log()

    result = ctl(daemon.home, "server", "stop")
    assert (result.returncode, result.stdout) == (0, "insidersd is not running\n")

    # No daemon and no systemd to start one: one line that says how, and status 3; the same
    # without systemctl at all.
    # (A PATH without the venv's bin, as after `make run`: the hint names the scripts by path.)
    for env in ({"PATH": "/usr/bin:/bin"}, {"PATH": str(tmp_path / "empty")}):
        result = ctl(daemon.home, "server", "start", **env)
        assert result.returncode == 3, result
        assert result.stdout == ""
        assert result.stderr == (
            "insidersctl: insidersd is not running, and no insiders unit is installed for "
            f"systemd: run `{BIN / 'insidersd'}`, or have systemd run it: "
            f"`{BIN / 'insidersctl'} server enable --user`\n"
        )


def test_a_daemon_out_of_reach_is_not_called_stopped(daemon: Daemon) -> None:
    """Another user, who may not reach the socket, hears that, not "not running"."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the client as another user")
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(INSIDERSCTL)]
    for action in ("stop", "start"):
        result = subprocess.run(
            [*command, "--socket", str(socket_path), "server", action],
            env=isolated_env(daemon.home),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 3, result
        assert "no permission to use insidersd's control socket" in result.stderr
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def test_bare_insidersctl(daemon: Daemon) -> None:
    result = ctl(daemon.home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("insidersd 0.1.0 (pid ")
    assert f"  index    {daemon.url}/simple/" in lines
    assert any(line.startswith("  watcher  running") for line in lines)
    assert "Commands used most:" in lines
    assert any(line.split()[:3] == ["insidersctl", "repos", "add"] for line in lines)
    assert msgspec.json.decode(ctl(daemon.home, "--json").stdout)["type"] == "status"

    daemon.stop()
    result = ctl(daemon.home)
    assert result.returncode == 3
    assert result.stderr.startswith("insidersctl: insidersd is not running")
    assert result.stdout.startswith("Commands used most:")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--json"],
        ["server", "start"],
        ["server", "stop", "--timeout", "3"],
        ["server", "logs", "--since", "-1h", "-p", "err"],
        ["watcher", "logs", "-f", "-n", "0"],
        ["logs", "--build", "repos", "1.0", "-n", "all"],  # a value that looks like a command
        ["logs", "-p", "status", "--until", "today"],
        ["completion", "fish"],
        ["update", "--no-wait", "a"],
    ],
)
def test_the_fast_parser_agrees_on_the_new_commands(argv: list[str]) -> None:
    from insidersctl import cli

    full = cli.parser().parse_args(cli._time_values(argv))
    assert vars(cli.parse(argv)) == vars(full)


def test_status_imports_none_of_the_new_commands_modules(daemon: Daemon) -> None:
    """`insidersctl status` stays as fast as it was: the live view, logs, completion and service
    modules are imported by their commands only."""
    code = (
        "import sys\nfrom insidersctl.__main__ import main\nstatus = main(['status'])\n"
        "print(status, sorted(m for m in sys.modules if m.startswith('insidersctl.')))"
    )
    result = run_python(daemon.home, code)
    assert result.stdout.splitlines()[-1] == (
        "0 ['insidersctl.__main__', 'insidersctl.cli', 'insidersctl.client', "
        "'insidersctl.commands', 'insidersctl.context', 'insidersctl.errors', "
        "'insidersctl.nesting', 'insidersctl.output', 'insidersctl.paths', "
        "'insidersctl.protocol']"
    )
