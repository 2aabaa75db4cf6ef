"""git's transports by allow-list: `repos add` refuses git's TRANSPORT::ADDRESS form (ext::
runs a command, fd:: talks to a descriptor, x:: runs git-remote-x), and every git process the
daemon runs has GIT_ALLOW_PROTOCOL, for what a registry written before held.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from insiders.repos.registry import REPOS_FILE
from tests.faults.places import silent_server
from tests.support import Daemon, run_ctl

ALLOWED = "https:http:ssh:git:file"


def ctl(daemon: Daemon, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_ctl(daemon, *args, timeout=timeout)


def start(home: Path, config: str = "") -> Daemon:
    (home / "config" / "insiders").mkdir(parents=True, exist_ok=True)
    (home / "config" / "insiders" / "config.toml").write_text(config)
    return Daemon(home, ["--upstream-mode", "none"]).start()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start(tmp_path / "d", "[watcher]\ngit-timeout = 20\n")
    yield running
    running.stop()


@pytest.mark.parametrize(
    "spec", ["ext::sh:demo", "fd::3:demo", "x::anything:demo", "EXT::x:demo", "fd::3"]
)
def test_repos_add_refuses_remote_helpers(daemon: Daemon, spec: str) -> None:
    added = ctl(daemon, "repos", "add", spec)
    assert added.returncode != 0, added.stdout
    said = added.stdout + added.stderr
    assert "remote helper" in said, said
    assert "https" in said  # what to use instead
    assert "demo" not in ctl(daemon, "repos", "list").stdout


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(c) for c in text)
    return children + [d for c in children for d in descendants(c)]


def test_every_git_process_has_the_allow_list(daemon: Daemon) -> None:
    """A git that hangs on a silent host: its environment, read from /proc while it waits."""
    with silent_server() as (url, accepted):
        assert ctl(daemon, "repos", "add", f"{url}/hung.git:hung").returncode == 0
        outcome: list[subprocess.CompletedProcess[str]] = []
        updating = threading.Thread(target=lambda: outcome.append(ctl(daemon, "update")))
        updating.start()
        deadline = time.monotonic() + 20
        while not accepted:  # git has connected: it is running, and waiting
            assert time.monotonic() < deadline, "git never connected"
            time.sleep(0.05)
        assert daemon.proc is not None
        environments = {}
        for pid in descendants(daemon.proc.pid):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            environments[name] = dict(
                item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item
            )
        for connection in accepted:
            connection.close()
        updating.join(60)
    gits = {name: env for name, env in environments.items() if name.startswith("git")}
    assert gits, environments.keys()
    assert all(env.get("GIT_ALLOW_PROTOCOL") == ALLOWED for env in gits.values()), {
        name: env.get("GIT_ALLOW_PROTOCOL") for name, env in gits.items()
    }


@pytest.mark.parametrize("location", ["fd::3", "x::anything"])
def test_a_remote_helper_already_in_the_registry_is_not_run(tmp_path: Path, location: str) -> None:
    """A registry written before `repos add` refused these: git itself refuses the transport."""
    home = tmp_path / "d"
    data = home / "data" / "insiders"
    data.mkdir(parents=True)
    record = {"dist": "old", "source": {"kind": "git", "location": location}, "added": 1.0}
    (data / REPOS_FILE).write_text(json.dumps({"version": 1, "repos": [record]}))
    daemon = start(home, "[watcher]\ngit-timeout = 20\nenabled = false\n")
    try:
        started = time.monotonic()
        update = ctl(daemon, "update", "old")
        said = update.stdout + update.stderr
        assert update.returncode != 0, said
        assert "not allowed" in said, said
        assert time.monotonic() - started < 15, said
    finally:
        daemon.stop()
