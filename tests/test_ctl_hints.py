"""Every command a hint names runs here, as typed: after `make run` the venv's bin is not on PATH,
so a hint that says `insidersd` would be "command not found"; one that says `systemctl --user
start insiders` with no unit installed would fail too.

Each hint is taken from a real run of the command in its situation (no daemon, no systemd here),
and each command in backquotes is checked: its program is found on that PATH (or is an absolute
path to an executable), and an insidersctl command line parses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from insidersctl.cli import parser
from tests.support import BIN, isolated_env

WITHOUT_VENV = "/usr/bin:/bin"


def commands(message: str) -> list[list[str]]:
    return [shlex.split(quoted) for quoted in re.findall(r"`([^`]+)`", message)]


def check_runs_here(command: list[str], path: str) -> None:
    words = command[1:] if command[0] == "sudo" else command
    program = words[0]
    if os.path.isabs(program):
        assert os.access(program, os.X_OK), command
        found = program
    else:
        found = shutil.which(program, path=path)  # type: ignore[assignment]
        assert found is not None, f"{program}: command not found on {path}"
    if Path(found).name == "insidersctl":
        parser().parse_args(words[1:])  # SystemExit for a command it does not have
    if Path(found).name in ("insidersd", "insidersctl"):
        assert Path(found).resolve().parent == BIN.resolve(), "another installation's"


@pytest.mark.parametrize("path", [WITHOUT_VENV, f"{BIN}:{WITHOUT_VENV}"], ids=["plain", "venv"])
@pytest.mark.parametrize("argv", [["status"], ["server", "start"], []])
def test_the_hints_of_a_daemon_that_is_not_running(
    tmp_path: Path, path: str, argv: list[str]
) -> None:
    result = subprocess.run(
        [str(BIN / "insidersctl"), *argv],
        env=isolated_env(tmp_path, PATH=path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result
    named = commands(result.stderr)
    assert len(named) == 2, result.stderr  # insidersd, then `insidersctl server enable --user`
    for command in named:
        check_runs_here(command, path)
    ctl = named[1][0]
    # The bare names when PATH finds this installation's scripts, else their paths.
    assert (ctl == "insidersctl") == (path != WITHOUT_VENV)
    assert named[1][1:] == ["server", "enable", "--user"]
