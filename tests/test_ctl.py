"""insidersctl against a real insidersd process: every command, the refusals, the fuzz.

Each command runs as a real `insidersctl` process with the same environment as the daemon, so it
finds the socket the way a user's shell would.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insiders.config import PathSettings, load_settings, resolve_directories
from insidersctl import protocol as p
from insidersctl.paths import SOCKET_NAME, SYSTEM_SOCKET, connect_unix, socket_candidates
from tests.control_fixtures import RawClient, bodies, frame
from tests.support import (
    BIN,
    Daemon,
    NotifyReceiver,
    following_log,
    isolated_env,
    make_wheel,
    run_python,
    wait_for_line,
    wheel_filename,
)

INSIDERSCTL = BIN / "insidersctl"


def ctl(
    daemon: Daemon | Netless,
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSIDERSCTL), *args],
        env=env or isolated_env(daemon.home),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def ok(daemon: Daemon | Netless, *args: str, **options: object) -> str:
    result = ctl(daemon, *args, **options)  # type: ignore[arg-type]
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def as_json(daemon: Daemon, *args: str, **options: object) -> dict[str, object]:
    data: dict[str, object] = msgspec.json.decode(ok(daemon, *args, "--json", **options))
    return data


def socket_path(daemon: Daemon | Netless) -> Path:
    return daemon.home / "run" / "insiders" / SOCKET_NAME


# Nothing the daemons here watch or publish to is outside this machine: a target and remote
# repositories on a loopback port where nothing listens.
CONFIG = """\
[targets.mirror]
url = "http://127.0.0.1:9/legacy/"
"""
NOWHERE = "https://127.0.0.1:9"


def configured(home: Path) -> Path:
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(CONFIG)
    return home


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the tests that only add to it."""
    home = configured(tmp_path_factory.mktemp("ctl"))
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    yield daemon
    if daemon.proc and daemon.proc.poll() is None:
        daemon.stop()


@dataclass
class Netless:
    """An insidersd in a network namespace of its own: whatever a fuzzed request makes it do
    (check a repository at a random address, say), no packet leaves. Its socket is a file, so
    clients outside reach it all the same."""

    home: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.home / "insidersd.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def netless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netless]:
    home = configured(tmp_path_factory.mktemp("netless"))
    # A path, not an abstract name: those belong to a network namespace, paths do not.
    notify = NotifyReceiver(home / "notify.sock")
    with (home / "insidersd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--net", str(BIN / "insidersd"), "--port", "0", "--upstream-mode", "none"],
            env=isolated_env(home, NOTIFY_SOCKET=str(notify.path)),
            stdout=log,
            stderr=log,
        )
    notify.watch(proc.pid)  # unshare execs insidersd: the same process
    daemon = Netless(home, proc)
    assert notify.settled.wait(20), daemon.log()
    assert notify.ready is not None, daemon.log()
    yield daemon
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def git_project(where: Path, name: str) -> Path:
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1.0"\n')
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "1"]):
        subprocess.run(["git", "-C", str(where), *command], check=True, env=env)
    return where


# -- status ----------------------------------------------------------------------------------------


def test_status(shared: Daemon) -> None:
    text = ok(shared, "status")
    assert text.splitlines()[0].startswith(f"insidersd 0.1.0 (pid {shared.proc.pid}), up ")  # type: ignore[union-attr]
    assert f"index     {shared.url}/simple/" in text
    assert "upstream  none (projects not hosted here are not found)" in text
    assert "watcher   running, checks every 10 min" in text
    report = as_json(shared, "status")
    assert report["type"] == "status"
    assert report["pid"] == shared.proc.pid  # type: ignore[union-attr]
    assert report["index_urls"] == [shared.url]
    assert report["socket"] == str(socket_path(shared))
    assert report["data_dir"] == str(shared.data_dir)
    # --json is taken before the command too
    assert msgspec.json.decode(ok(shared, "--json", "status"))["type"] == "status"


def test_server_status(shared: Daemon) -> None:
    report = as_json(shared, "server", "status")
    assert report["index_urls"] == [shared.url]
    assert report["upstream"] is None
    assert "hosted    " in ok(shared, "server", "status")


def test_the_client_imports_nothing_heavy(shared: Daemon) -> None:
    """insidersctl must start fast: no event loop, no web stack, no daemon code."""
    code = textwrap.dedent(
        """
        import sys
        from insidersctl.__main__ import main
        status = main(["status"])
        heavy = sorted(
            name for name in sys.modules
            if name.split(".")[0]
            in {"trio", "quart", "quart_trio", "hypercorn", "httpx", "insiders"}
        )
        print(status, heavy)
        """
    )
    result = run_python(shared.home, code)
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr


# -- tokens and projects -------------------------------------------------------------------------


def test_a_token_made_with_insidersctl_uploads_and_dies_when_revoked(
    shared: Daemon, tmp_path: Path
) -> None:
    result = ctl(shared, "tokens", "create", "ci")
    assert result.returncode == 0
    secret = result.stdout.strip()
    assert "shown only this once" in result.stderr
    wheel = tmp_path / wheel_filename("tok-demo", "1.0")
    wheel.write_bytes(make_wheel("tok-demo", "1.0"))
    assert shared.upload(wheel, token=secret).status_code == 200
    tokens = as_json(shared, "tokens", "list")["tokens"]
    assert {(t["name"], t["scope"]) for t in tokens} >= {("default", "upload"), ("ci", "upload")}  # type: ignore[index, union-attr]
    assert "secret" not in ok(shared, "tokens", "list", "--json")
    ok(shared, "tokens", "revoke", "ci")
    wheel2 = tmp_path / wheel_filename("tok-demo", "2.0")
    wheel2.write_bytes(make_wheel("tok-demo", "2.0"))
    assert shared.upload(wheel2, token=secret).status_code in (401, 403)
    result = ctl(shared, "tokens", "revoke", "ci", "--json")
    assert result.returncode == 1
    assert msgspec.json.decode(result.stdout) == {
        "type": "error",
        "code": "refused",
        "message": "no token named 'ci'",
    }


@pytest.fixture(scope="module")
def hosted(shared: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    where = tmp_path_factory.mktemp("wheels")
    for version in ("1.0", "1.1", "2.0"):
        wheel = where / wheel_filename("Ctl_Demo", version)
        wheel.write_bytes(make_wheel("Ctl_Demo", version))
        assert shared.upload(wheel).status_code == 200
    return "ctl-demo"


def test_projects(shared: Daemon, hosted: str) -> None:
    listing = as_json(shared, "projects", "list")["projects"]
    [demo] = [x for x in listing if x["name"] == "Ctl_Demo"]  # type: ignore[union-attr]
    assert (demo["versions"], demo["files"], demo["latest"]) == (3, 3, "2.0")  # type: ignore[index]
    text = ok(shared, "projects", "list")
    assert text.splitlines()[0].split() == [
        "NAME",
        "LATEST",
        "VERSIONS",
        "FILES",
        "SIZE",
        "UPLOADED",
    ]
    assert "Ctl_Demo" in text
    shown = ok(shared, "projects", "show", "ctl.demo")
    assert "ctl_demo-1.1-py3-none-any.whl" in shown
    result = ctl(shared, "projects", "show", "absent-project")
    assert (result.returncode, result.stderr) == (
        1,
        "insidersctl: no project absent-project is hosted here\n",
    )


def _files(daemon: Daemon, project: str) -> dict[str, dict[str, object]]:
    detail = as_json(daemon, "projects", "show", project)
    return {f["filename"]: f for f in detail["files"]}  # type: ignore[union-attr, index]


def test_yank_and_unyank(shared: Daemon, hosted: str) -> None:
    assert ok(shared, "yank", hosted, "2.0", "--reason", "broken build") == (
        "yanked Ctl_Demo 2.0 (1 file)\n"
    )
    wheel = _files(shared, hosted)["ctl_demo-2.0-py3-none-any.whl"]
    assert (wheel["yanked"], wheel["yanked_reason"]) == (True, "broken build")
    assert ok(shared, "yank", hosted, "2.0", "--reason", "broken build") == (
        "Ctl_Demo 2.0 was yanked already\n"
    )
    assert as_json(shared, "projects", "list")["projects"][0]["latest"] == "1.1"  # type: ignore[index]
    assert ok(shared, "unyank", hosted, "2.0") == "unyanked Ctl_Demo 2.0 (1 file)\n"
    assert ctl(shared, "yank", hosted, "9.9").returncode == 1


def test_remove_asks_first(shared: Daemon, hosted: str) -> None:
    # Without a terminal and without --yes: refused, nothing removed.
    result = ctl(shared, "remove", hosted, "1.0")
    assert result.returncode == 1
    assert "needs a confirmation" in result.stderr
    assert "ctl_demo-1.0-py3-none-any.whl" in _files(shared, hosted)

    def answer(text: str) -> tuple[int, str]:
        """Run remove on a terminal and answer its question."""
        pid, fd = pty.fork()
        if pid == 0:
            env = isolated_env(shared.home)
            os.execve(str(INSIDERSCTL), [str(INSIDERSCTL), "remove", hosted, "1.0"], env)
        output = b""
        while b"[y/N]" not in output:
            output += os.read(fd, 1024)
        os.write(fd, text.encode() + b"\n")
        try:
            while chunk := os.read(fd, 1024):
                output += chunk
        except OSError:
            pass  # EIO: the child closed the terminal
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode()

    status, output = answer("n")
    assert status == 1
    assert "remove 1 file of Ctl_Demo from the index?" in output
    assert "ctl_demo-1.0-py3-none-any.whl" in output
    assert "nothing removed" in output
    assert "ctl_demo-1.0-py3-none-any.whl" in _files(shared, hosted)
    status, output = answer("y")
    assert status == 0, output
    assert "removed 1 file of Ctl_Demo" in output
    assert "ctl_demo-1.0-py3-none-any.whl" not in _files(shared, hosted)


def test_remove_one_file_with_yes(shared: Daemon, hosted: str) -> None:
    filename = "ctl_demo-1.1-py3-none-any.whl"
    removed = as_json(shared, "remove", hosted, "--file", filename, "--yes")
    assert removed == {
        "type": "removed",
        "project": "Ctl_Demo",
        "files": [filename],
        "dry_run": False,
    }
    result = ctl(shared, "remove", hosted, "--file", filename, "--yes")
    assert result.returncode == 1
    assert f"has no file {filename}" in result.stderr


# -- repositories and the (absent) watcher ---------------------------------------------------------


def test_repos(shared: Daemon, tmp_path: Path) -> None:
    git_project(tmp_path / "work" / "myrepo", "My-Local.Project")
    # A relative path is the client's: the daemon runs elsewhere.
    added = as_json(shared, "repos", "add", "./myrepo", cwd=tmp_path / "work")
    assert added["repo"]["name"] == "My-Local.Project"  # type: ignore[index]
    assert added["repo"]["source"] == str(tmp_path / "work" / "myrepo")  # type: ignore[index]
    assert added["checking"] is True  # the watcher runs: an added repository is checked
    remote = f"{NOWHERE}/team/insiders-project.git"
    result = ctl(
        shared,
        "repos",
        "add",
        f"{remote}:insiders-demo",
        "--since",
        "1.2",
        "--publish-to",
        "mirror",
    )
    # A check of it starts at once (the README says the first versions are built on add).
    said = "checking it now; watch it with: insidersctl update insiders-demo\n"
    assert (result.returncode, result.stderr) == (0, said)
    assert result.stdout == (
        f"added insiders-demo from {remote}: since 1.2 version(s), "
        "published to this index, mirror\n"
    )

    table = ok(shared, "repos", "list").splitlines()
    assert table[0].split() == [
        "NAME", "SOURCE", "VERSIONS", "CHECKED", "NEWEST", "TAG", "PUBLISHED", "STATE"
    ]  # fmt: skip
    assert table[1].split()[:4] == ["insiders-demo", remote, "since", "1.2"]
    assert table[2].split()[:3] == ["My-Local.Project", str(tmp_path / "work" / "myrepo"), "newest"]
    repos = as_json(shared, "repos", "list")["repos"]
    assert [r["name"] for r in repos] == ["insiders-demo", "My-Local.Project"]  # type: ignore[index, union-attr]

    for spec, message in [
        ("owner/repo", "give the distribution name of a remote repository: owner/repo:DIST"),
        ("git@127.0.0.1:team/repo.git", "git@127.0.0.1:team/repo.git:DIST"),
        ("nonsense", "'nonsense' names no repository"),
        (str(tmp_path / "absent") + ":x", "no such directory"),
        (f"{NOWHERE}/other:insiders-demo", f"insiders-demo is watched already, from {remote}"),
        (f"{NOWHERE}/a:b --publish-to nowhere", "no spaces"),
    ]:
        result = ctl(shared, "repos", "add", spec)
        assert result.returncode == 1, spec
        assert message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1
    for options, message in [
        (["--since", "not-a-version"], "not a version (PEP 440)"),
        (
            ["--publish-to", "nowhere"],
            "no [targets.nowhere] in the configuration (configured: mirror)",
        ),
    ]:
        result = ctl(shared, "repos", "add", f"{NOWHERE}/o/r:d", *options)
        assert (result.returncode, message in result.stderr) == (1, True), result.stderr

    # The watcher answers for the local one (no tags: nothing to build).
    result = ctl(shared, "update", "my-local-project")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("My-Local.Project: ")
    result = ctl(shared, "update", "absent")
    assert result.returncode == 1
    assert "no watched repository 'absent'" in result.stderr
    assert ok(shared, "watcher", "stop").startswith("watcher: paused")
    assert ok(shared, "watcher", "status").startswith("watcher: paused")
    assert ok(shared, "watcher", "start").startswith("watcher: running")

    assert ok(shared, "repos", "remove", "my_local_project").startswith("removed My-Local.Project")
    assert ok(shared, "repos", "remove", remote).startswith("removed insiders-demo")
    assert as_json(shared, "repos", "list")["repos"] == []


def test_repos_survive_a_restart(daemon: Daemon) -> None:
    ok(daemon, "repos", "add", "o/r:kept", "--all")
    daemon.stop()
    daemon.start()
    [repo] = as_json(daemon, "repos", "list")["repos"]  # type: ignore[misc]
    assert (repo["name"], repo["versions"]) == ("kept", "all")  # type: ignore[index]


# -- logs ------------------------------------------------------------------------------------------


def test_logs(shared: Daemon) -> None:
    text = ok(shared, "logs", "-n", "200")
    assert "insiders.control.server: control socket" in text
    assert ok(shared, "logs", "-n", "0") == ""
    with following_log(shared) as lines:
        ok(shared, "tokens", "create", "followed")
        wait_for_line(lines, "token followed created")


def test_logs_of_a_daemon_that_stopped(daemon: Daemon) -> None:
    daemon.stop()
    result = ctl(daemon, "logs", "-n", "3")
    assert result.returncode == 0
    assert "insidersd is not running" in result.stderr
    assert "insiders.app: SIGTERM: stopping" in result.stdout


# -- when the daemon is not there --------------------------------------------------------------


def test_no_daemon_is_one_line_and_status_3(tmp_path: Path) -> None:
    # A PATH without the venv's bin (as after `make run`): the hint names the scripts by path.
    env = isolated_env(tmp_path, PATH="/usr/bin:/bin")
    result = subprocess.run(
        [str(INSIDERSCTL), "status"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == (
        "insidersctl: insidersd is not running: there is no control socket at "
        f"{tmp_path}/run/insiders/control.sock; start it with `{BIN / 'insidersd'}`, or have "
        f"systemd run it: `{BIN / 'insidersctl'} server enable --user`\n"
    )
    result = subprocess.run(
        [str(INSIDERSCTL), "--json", "repos", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3
    assert msgspec.json.decode(result.stdout)["code"] == "unreachable"


def test_a_killed_daemons_socket_is_reported_then_replaced(daemon: Daemon) -> None:
    daemon.kill()  # SIGKILL: no cleanup, the socket file stays
    assert socket_path(daemon).exists()
    result = ctl(daemon, "status")
    assert result.returncode == 3
    assert "nothing listens on the control socket" in result.stderr
    daemon.start()
    assert "replacing the stale control socket" in daemon.log()
    assert ok(daemon, "status")


def test_a_second_daemon_refuses_to_start(daemon: Daemon) -> None:
    second = subprocess.run(
        [str(BIN / "insidersd"), "--port", "0", "--upstream-mode", "none"],
        env=isolated_env(daemon.home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert f"cannot start: insidersd is already running, pid {daemon.proc.pid}" in second.stderr  # type: ignore[union-attr]
    assert "Traceback" not in second.stderr
    assert ok(daemon, "status")  # the first one serves on


def test_the_socket_goes_away_with_the_daemon(daemon: Daemon) -> None:
    daemon.stop()
    assert not socket_path(daemon).exists()


# -- usage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["repos", "lst"],
        ["repos", "add"],
        ["repos", "add", "o/r:d", "--all", "--since", "1"],
        ["remove", "project"],
        ["remove", "project", "1.0", "--file", "f.whl"],
        ["logs", "-n", "-1"],
        ["tokens", "create", "x", "--scope", "admin"],
        ["--timeout", "soon", "status"],
        ["repos", "add", "o/r:d", "--no-local"],
    ],
)
def test_usage_errors_are_status_2(shared: Daemon, args: list[str]) -> None:
    result = ctl(shared, *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("group", "action"),
    [
        ("server", "status"),
        ("repos", "list"),
        ("watcher", "status"),
        ("tokens", "list"),
        ("projects", "list"),
        ("mirrors", "list"),
        ("cache", "status"),
    ],
)
def test_a_group_alone_shows_what_it_has(shared: Daemon, group: str, action: str) -> None:
    """`insidersctl repos` lists, as bare `systemctl` does; the options go with it."""
    alone = ctl(shared, group)
    assert alone.returncode == 0, alone
    full = ctl(shared, group, action)
    assert alone.stdout.splitlines()[:1] == full.stdout.splitlines()[:1]
    assert alone.stderr == full.stderr
    reply = as_json(shared, group)
    assert reply["type"] == as_json(shared, group, action)["type"]
    before = msgspec.json.decode(ok(shared, "--json", "--timeout", "5", group))
    assert before["type"] == reply["type"]


def test_help_everywhere(shared: Daemon) -> None:
    for args in (["--help"], ["repos", "add", "--help"], ["tokens", "--help"], ["update", "-h"]):
        result = ctl(shared, *args)
        assert result.returncode == 0
        assert "usage: insidersctl" in result.stdout


# -- finding the socket ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"XDG_RUNTIME_DIR": "/run/user/1000"},
        {"RUNTIME_DIRECTORY": "/run/insiders"},
        {"RUNTIME_DIRECTORY": "/run/a:/run/b", "XDG_RUNTIME_DIR": "/run/user/7"},
        {},
    ],
)
def test_the_client_looks_where_the_daemon_binds(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path)}  # no config file
    daemon = resolve_directories(PathSettings(), env).runtime / SOCKET_NAME
    assert socket_candidates(env=env)[0] == daemon
    assert socket_candidates(env=env)[-1] == SYSTEM_SOCKET


def test_the_client_reads_the_daemons_runtime_dir_setting(tmp_path: Path) -> None:
    config = tmp_path / "insiders" / "config.toml"
    config.parent.mkdir()
    # The rest of the file is the daemon's to check: the client reads [paths] alone.
    config.write_text(
        'log-level = "debug"\n[server]\nport = 1\n[paths]\nruntime-dir = "/srv/run"\n'
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/user/1"}
    assert socket_candidates(env=env)[0] == Path("/srv/run/control.sock")
    settings = load_settings(config, required=True)
    assert resolve_directories(settings.paths, env).runtime / SOCKET_NAME == Path(
        "/srv/run/control.sock"
    )
    config.write_text("[paths\n")  # the daemon refuses it and says why; the client looks by default
    assert socket_candidates(env=env)[0] == Path("/run/user/1/insiders/control.sock")
    config.write_text('[paths]\nruntime-dir = "/srv/run"\n')
    assert socket_candidates(config=str(config), env={})[0] == Path("/srv/run/control.sock")
    assert socket_candidates(socket_path="/x.sock", env=env) == [Path("/x.sock")]
    assert socket_candidates(env={**env, "INSIDERS_SOCKET": "/y.sock"}) == [Path("/y.sock")]
    assert socket_candidates(runtime="/z", env=env) == [Path("/z/control.sock")]


def test_socket_flags_and_variables(shared: Daemon, tmp_path: Path) -> None:
    elsewhere = isolated_env(tmp_path)  # XDG dirs where no daemon is
    assert ctl(shared, "status", env=elsewhere).returncode == 3
    assert (
        ctl(shared, "status", "--socket", str(socket_path(shared)), env=elsewhere).returncode == 0
    )
    runtime = str(socket_path(shared).parent)
    assert ctl(shared, "--runtime-dir", runtime, "status", env=elsewhere).returncode == 0
    env = {**elsewhere, "INSIDERS_SOCKET": str(socket_path(shared))}
    assert ctl(shared, "status", env=env).returncode == 0


def test_a_config_file_named_must_be_there(shared: Daemon, tmp_path: Path) -> None:
    """-c FILE that is missing is an error (as `insidersd -c FILE` says); the default may be."""
    elsewhere = isolated_env(tmp_path, XDG_RUNTIME_DIR=str(shared.home / "run"))
    assert not (tmp_path / "config" / "insiders" / "config.toml").exists()
    assert ctl(shared, "status", env=elsewhere).returncode == 0
    missing = tmp_path / "missing.toml"
    for args in (["-c", str(missing), "status"], ["status", "--config", str(missing)]):
        result = ctl(shared, *args, env=elsewhere)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            f"insidersctl status: cannot read the config file {missing}: "
            "No such file or directory\n"
        )
    result = ctl(shared, "-c", str(tmp_path), "repos", env=elsewhere)
    assert result.returncode == 2
    assert f"cannot read the config file {tmp_path}: Is a directory" in result.stderr
    # A file that is there is read: its runtime directory is where the socket is.
    config = tmp_path / "other.toml"
    config.write_text(f'[paths]\nruntime-dir = "{socket_path(shared).parent}"\n')
    assert ctl(shared, "-c", str(config), "status", env=isolated_env(tmp_path)).returncode == 0


# -- fuzz: thousands of frames at the real daemon ------------------------------------------------


@settings(
    database=None,  # no .hypothesis/ in the work tree: every run explores afresh
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(bodies, min_size=1, max_size=4))
def test_fuzzed_requests_get_error_replies_and_the_daemon_serves_on(
    netless: Netless, messages: list[bytes]
) -> None:
    with RawClient(socket_path(netless)) as client:
        assert isinstance(client.hello(), p.Welcome)
        for body in messages:
            client.send(frame(body))
            reply = client.receive()
            assert not isinstance(reply, p.Welcome | p.Progress)


@settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(min_size=1, max_size=400), st.booleans())
def test_fuzzed_streams_end_in_an_error_or_a_close(
    netless: Netless, junk: bytes, greet: bool
) -> None:
    with RawClient(socket_path(netless), timeout=10) as client:
        if greet:
            client.hello()
        client.send(junk)
        client.sock.shutdown(2 - 1)  # SHUT_WR: the daemon sees the end of the stream
        for message in client.drain():  # every frame the daemon sends is whole and valid
            assert not isinstance(message, p.Welcome | p.Progress)


def test_the_daemon_survived_the_fuzz_and_many_clients(netless: Netless) -> None:
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            if i % 5 == 0:  # a staller holds a connection without a word
                with RawClient(socket_path(netless)):
                    time.sleep(0.5)
                return
            if i % 7 == 0:  # the real client, a process each time
                for _ in range(2):
                    result = ctl(netless, "status", "--json")
                    assert result.returncode == 0, result.stderr
                return
            for _ in range(10):
                with RawClient(socket_path(netless)) as raw:
                    assert isinstance(raw.hello(), p.Welcome)
                    raw.send_message(p.Status())
                    assert isinstance(raw.receive(), p.StatusReport)
        except Exception as error:  # collected: a thread cannot fail the test itself
            errors.append(f"{i}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert netless.proc.poll() is None  # type: ignore[union-attr]
    assert ok(netless, "status")
    log = netless.log()
    assert "Traceback" not in log
    assert "unexpected error" not in log


def test_connect_unix_is_the_clients_way_in(shared: Daemon) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        connect_unix(sock, socket_path(shared))
        sock.sendall(p.encode_frame(p.Hello()))
        reader = p.FrameReader()
        while (body := reader.next_frame()) is None:
            reader.feed(sock.recv(4096))
        assert isinstance(p.decode_server_message(body), p.Welcome)


# -- the command line parser -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["--json", "status"],
        ["--socket", "/s", "--timeout", "5", "status", "--json"],
        ["-c", "repos", "repos", "list"],  # an option value that looks like a command
        ["repos", "add", "o/r:d", "--since", "1.0", "--publish-to", "x", "--publish-to", "y"],
        ["update", "a", "b", "--force"],
        ["update", "--no-wait"],
        ["watcher", "stop"],
        ["logs", "-n", "5", "-f"],
        ["tokens", "create", "ci", "--scope", "read"],
        ["yank", "p", "1.0", "--reason", "status"],
        ["remove", "p", "--file", "f.whl", "-y"],
        ["server", "status", "--runtime-dir", "/r"],
        ["repos"],
        ["watcher", "--json"],
    ],
)
def test_the_fast_parser_agrees_with_the_full_one(argv: list[str]) -> None:
    from insidersctl import cli

    assert vars(cli.parse(argv)) == vars(cli.parser().parse_args(argv))
    assert len(cli.command_words(argv)) >= 1
