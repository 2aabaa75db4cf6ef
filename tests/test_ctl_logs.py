"""`insidersctl logs` against a real daemon's log file, with journalctl's options and meanings.

(Under systemd the same options go to journalctl: tests/systemd.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from insidersctl.logs import parse_priority, parse_time
from tests.projects import any_backend_pyproject
from tests.support import BIN, Daemon, following_log, git, isolated_env, run_ctl, wait_for_line

INSIDERSCTL = BIN / "insidersctl"

# A build that fails at once, with nothing to download: its backend does not exist.
NO_BACKEND = any_backend_pyproject("nobackend", "1.0", requires=(), backend="no_such_backend")


def ctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(daemon, *args, timeout=120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose log has lines of the index, the control server and the watcher, an
    error among them, and a failed build with its log."""
    home = tmp_path_factory.mktemp("logs")
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[watcher]\nenabled = false\n")
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    repo = home / "src" / "nobackend"
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet")
    (repo / "pyproject.toml").write_text(NO_BACKEND)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "1.0")
    git(repo, "tag", "v1.0")
    assert ctl(daemon, "repos", "add", f"{repo}:nobackend").returncode == 0
    assert ctl(daemon, "update", "--wait").returncode == 1
    yield daemon
    daemon.stop()


def test_priority_component_and_json(daemon: Daemon) -> None:
    everything = ctl(daemon, "logs", "-n", "all").stdout
    assert "insiders.control.server: control socket" in everything
    assert "ERROR   insiders.watcher.watcher: nobackend 1.0:" in everything

    errors = ctl(daemon, "logs", "-p", "err", "-n", "all").stdout.splitlines()
    assert errors
    assert " ERROR " in errors[0] or " CRITICAL " in errors[0]
    assert not any(" INFO " in line for line in errors)
    assert ctl(daemon, "logs", "-p", "3").stdout == ctl(daemon, "logs", "-p", "err").stdout
    assert ctl(daemon, "logs", "-p", "info..info", "-n", "all").stdout.count(" ERROR ") == 0

    watcher = ctl(daemon, "watcher", "logs", "-n", "all").stdout
    assert "insiders.watcher.watcher: nobackend 1.0:" in watcher
    assert "insiders.control" not in watcher
    server = ctl(daemon, "server", "logs", "-n", "all").stdout
    assert "serving on" in server
    assert "insiders.watcher" not in server

    entries = [
        json.loads(line) for line in ctl(daemon, "logs", "--json", "-n", "5").stdout.splitlines()
    ]
    assert len(entries) == 5
    assert set(entries[0]) == {"time", "priority", "level", "logger", "message"}
    [error] = [
        json.loads(line)
        for line in ctl(daemon, "watcher", "logs", "--json", "-p", "err").stdout.splitlines()
    ]
    assert (error["priority"], error["level"]) == (3, "ERROR")
    assert error["logger"] == "insiders.watcher.watcher"
    assert error["message"].startswith("nobackend 1.0: python -m build failed")
    assert abs(error["time"] - time.time()) < 3600


def test_since_and_until(daemon: Daemon) -> None:
    count = len(ctl(daemon, "logs", "-n", "all").stdout.splitlines())
    assert len(ctl(daemon, "logs", "-n", "all", "--since", "-1h").stdout.splitlines()) == count
    assert len(ctl(daemon, "logs", "-n", "all", "--since", "today").stdout.splitlines()) == count
    assert ctl(daemon, "logs", "--since", "tomorrow").stdout == ""
    assert ctl(daemon, "logs", "--until", "1 hour ago").stdout == ""
    result = ctl(daemon, "logs", "--since", "last tuesday-ish")
    assert result.returncode == 2
    assert "cannot read the time 'last tuesday-ish'" in result.stderr
    result = ctl(daemon, "logs", "-p", "loud")
    assert (result.returncode, "'loud' is not a priority" in result.stderr) == (2, True)


def test_a_time_range_prints_every_entry_in_it(daemon: Daemon) -> None:
    """journalctl --since prints all it matches: -n's default (50) is for no range."""
    subprocess.run(
        f"for i in $(seq 60); do {INSIDERSCTL} tokens create ranged$i >/dev/null; done",
        shell=True,
        env=isolated_env(daemon.home),
        check=True,
        timeout=300,
    )
    everything = ctl(daemon, "logs", "-n", "all").stdout.splitlines()
    assert len(everything) > 60
    assert ctl(daemon, "logs", "--since", "-1h").stdout.splitlines() == everything
    assert ctl(daemon, "logs", "--until", "+1h").stdout.splitlines() == everything
    ranged = ctl(daemon, "logs", "-p", "info", "--since", "today").stdout
    assert ranged.count(" created") >= 60
    assert ctl(daemon, "logs").stdout.splitlines() == everything[-50:]
    assert len(ctl(daemon, "logs", "--since", "-1h", "-n", "3").stdout.splitlines()) == 3


def test_a_reader_that_goes_away_is_no_error(daemon: Daemon) -> None:
    """`insidersctl logs -f | head -1`: when head is done, insidersctl ends without a word."""
    follower = subprocess.Popen(
        [str(INSIDERSCTL), "logs", "-f", "-n", "1"],
        env=isolated_env(daemon.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    assert follower.stdout.readline()
    follower.stdout.close()  # what head does after its line
    # The next entry is written to a pipe nobody reads.
    assert ctl(daemon, "tokens", "create", "unread").returncode == 0
    _, errors = follower.communicate(timeout=30)
    assert errors == ""
    assert follower.returncode == 1


def test_a_build_log(daemon: Daemon) -> None:
    log = daemon.data_dir / "logs" / "nobackend" / "1.0.log"
    whole = ctl(daemon, "logs", "--build", "nobackend")
    assert whole.returncode == 0
    assert whole.stdout == log.read_text()
    assert "no_such_backend" in whole.stdout
    assert ctl(daemon, "logs", "--build", "NoBackend", "1.0").stdout == whole.stdout
    assert (
        ctl(daemon, "logs", "--build", "nobackend", "-n", "1").stdout
        == (whole.stdout.splitlines(keepends=True)[-1])
    )
    missing = ctl(daemon, "logs", "--build", "nobackend", "9.9")
    assert missing.returncode == 1
    assert "no build log of nobackend 9.9" in missing.stderr
    assert "(there are logs of 1.0)" in missing.stderr
    assert ctl(daemon, "logs", "1.0").returncode == 2  # a VERSION without --build


def test_follow_from_now(daemon: Daemon) -> None:
    """-f -n 0: nothing of the past, then each new entry (tail -f -n 0, journalctl -f -n 0)."""
    with following_log(daemon) as lines:
        for n in range(2):
            assert ctl(daemon, "tokens", "create", f"followed{n}").returncode == 0
            # Nothing from before, nothing else: the new entry is the next line it prints.
            [line] = wait_for_line(lines, f"token followed{n} created")
            assert "INFO" in line


def test_a_daemon_that_cannot_start_says_why_in_its_log(daemon: Daemon, tmp_path: Path) -> None:
    port = daemon.url.rsplit(":", 1)[1]
    taken = Daemon(tmp_path / "taken", ["--upstream-mode", "none"]).start(
        wait=False, port=int(port)
    )
    assert taken.proc is not None
    assert taken.proc.wait(30) == 1
    result = ctl(taken, "logs", "-p", "crit")
    assert "insidersd is not running" in result.stderr
    assert "CRITICAL insiders: cannot start:" in result.stdout
    assert "Address already in use" in result.stdout

    broken = tmp_path / "broken"
    config = broken / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[server]\nport = 'eighty'\n")
    failed = Daemon(broken).start(wait=False)
    assert failed.proc is not None
    assert failed.proc.wait(30) == 2
    result = ctl(failed, "logs")
    assert "CRITICAL insiders: cannot start:" in result.stdout
    assert "port" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [("err", (0, 3)), ("7", (0, 7)), ("warning..err", (3, 4)), ("..notice", (0, 5))],
)
def test_priorities(text: str, expected: tuple[int, int]) -> None:
    assert parse_priority(text) == expected


def test_times() -> None:
    now = time.mktime((2026, 3, 1, 12, 30, 0, 0, 0, -1))
    assert parse_time("-1h30min", now) == now - 5400
    assert parse_time("5 min ago", now) == now - 300
    assert parse_time("+2h", now) == now + 7200
    assert parse_time("yesterday", now) == time.mktime((2026, 2, 28, 0, 0, 0, 0, 0, -1))
    assert parse_time("12:00", now) == now - 1800
    assert parse_time("2026-02-27 08:15", now) == time.mktime((2026, 2, 27, 8, 15, 0, 0, 0, -1))


def test_repos_list_names_a_failures_log_once(daemon: Daemon) -> None:
    log = daemon.data_dir / "logs" / "nobackend" / "1.0.log"
    for command in (["repos", "list"], ["status"]):
        text = ctl(daemon, *command).stdout
        [line] = [line for line in text.splitlines() if line.startswith("nobackend 1.0: ")]
        assert "python -m build failed (exit status 1)" in line
        assert f" (log: {log})" in line
        assert line.count(str(log)) == 1


def test_the_journalctl_command() -> None:
    """Under systemd the options go to journalctl, for the daemon's unit."""
    from insidersctl.logs import Filter, Reading, journalctl_command
    from insidersctl.protocol import LogsLocation

    where = LogsLocation(journal=True, unit="insiders.service", user=True)
    keep = Filter(priority=parse_priority("warning"), component="watcher")
    command = journalctl_command(
        where, Reading(lines=0, follow=True, keep=keep, as_json=True, since="-1h", until="now")
    )
    assert command == [
        "journalctl", "--no-pager", "--lines", "0", "--follow", "--priority", "0..4",
        "--since", "-1h", "--until", "now", "--grep", r"^(insiders\.watcher|insiders\.repos)[.:]",
        "--output", "json", "--user-unit", "insiders.service",
    ]  # fmt: skip
    system = LogsLocation(journal=True, unit="insiders.service")
    assert journalctl_command(system, Reading(lines=None, follow=False))[-3:] == [
        "all", "--unit", "insiders.service"
    ]  # fmt: skip
    anonymous = LogsLocation(journal=True, invocation="0123abcd")
    assert journalctl_command(anonymous, Reading(lines=5, follow=False))[-1] == (
        "_SYSTEMD_INVOCATION_ID=0123abcd"
    )


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="journalctl is not installed")
def test_journalctl_takes_those_options(tmp_path: Path) -> None:
    """This machine's real journalctl parses every option we give it (on an empty journal)."""
    from insidersctl.logs import Filter, Reading, journalctl_command
    from insidersctl.protocol import LogsLocation

    where = LogsLocation(journal=True, unit="insiders.service", user=True)
    for keep, since in [
        (Filter(priority=parse_priority("err..warning"), component="server"), "-1h"),
        (Filter(priority=parse_priority("7")), "2026-01-01 10:00"),
        (Filter(component="watcher"), "yesterday"),
    ]:
        command = journalctl_command(
            where, Reading(lines=3, follow=False, keep=keep, as_json=True, since=since)
        )
        result = subprocess.run(
            [*command, "--directory", str(tmp_path)], capture_output=True, text=True, check=False
        )
        # 1 with --grep and no entry (grep's meaning); never a complaint about an option.
        assert result.returncode in (0, 1), result.stderr
        assert result.stderr.strip() in ("", "No journal files were found."), result.stderr


def test_journal_entries_in_the_files_shape() -> None:
    from insidersctl.logs import journal_entry

    line = json.dumps(
        {
            "MESSAGE": "insiders.watcher.watcher: demo: git ls-remote failed",
            "PRIORITY": "3",
            "__REALTIME_TIMESTAMP": "1764600000123456",
            "_SYSTEMD_USER_UNIT": "insiders.service",
        }
    )
    assert json.loads(journal_entry(line) or "") == {
        "time": 1764600000.123456,
        "priority": 3,
        "level": "ERROR",
        "logger": "insiders.watcher.watcher",
        "message": "demo: git ls-remote failed",
    }
    assert journal_entry(json.dumps({"MESSAGE": [1, 2, 3]})) is None  # binary data
