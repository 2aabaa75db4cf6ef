"""Reload applies every [watcher] setting to the running watcher, and names what needs a restart."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.support import Daemon, git_project, tag_release
from tests.test_watcher import SLOW_BUILD, ctl, watching, wheelhouse

__all__ = ["wheelhouse"]


def reload(daemon: Daemon, config: str) -> None:
    (daemon.home / "config" / "insiders" / "config.toml").write_text(config)
    before = daemon.log().count("configuration reloaded")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while daemon.log().count("configuration reloaded") == before:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)


def watcher(daemon: Daemon) -> dict:  # type: ignore[type-arg]
    info: dict = json.loads(ctl(daemon, "watcher", "status", "--json").stdout)["watcher"]  # type: ignore[type-arg]
    return info


def test_reload_applies_the_watcher_settings(tmp_path: Path, wheelhouse: Daemon) -> None:
    config = "[watcher]\nenabled = false\ninterval = 3600.0\n"
    with watching(tmp_path / "d", wheelhouse, config) as daemon:
        # A repository with no version tag: checking it is cheap, and its status says so.
        repo = git_project(tmp_path / "src", "later")
        tag_release(repo, "1.0", tag="nightly")
        ctl(daemon, "repos", "add", f"{repo}:later")
        assert watcher(daemon)["state"] == "paused"

        reload(
            daemon,
            '[watcher]\nenabled = true\ninterval = 1.0\nmax-builds = 2\n[server]\nhost = "::1"\n',
        )
        info = watcher(daemon)
        assert info["state"] == "running"
        assert info["interval"] == 1.0
        # The periodic check comes within the new interval, not the old hour.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
            if repos[0]["last_check"]:
                break
            time.sleep(0.3)
        assert repos[0]["last_check"]
        assert repos[0]["ignored_tags"] == ["nightly"]
        assert (
            "later: no version tag among 1 tag; ignored: nightly"
            in ctl(daemon, "repos", "list").stdout
        )
        log = daemon.log()
        assert "reload: the watcher now runs with the new interval, enabled, max-builds" in log
        assert "reload: server.host changed, takes effect at restart" in log
        status = ctl(daemon, "status")
        assert "server.host changed, takes effect at restart" in status.stdout
        assert json.loads(ctl(daemon, "status", "--json").stdout)["restart_needed"] == [
            "server.host"
        ]
        # The index still listens where it did.
        with daemon.client() as client:
            assert client.get("/simple/").status_code == 200

        reload(daemon, "[watcher]\nenabled = false\ninterval = 1.0\n")
        assert watcher(daemon)["state"] == "paused"
        assert json.loads(ctl(daemon, "status", "--json").stdout)["restart_needed"] == []


def test_a_reloaded_build_timeout_stops_the_next_build(tmp_path: Path, wheelhouse: Daemon) -> None:
    """`insidersctl reload` returns with the new limits in force: a build-timeout lowered from 15
    minutes to 2 seconds stops the very next build."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        slow = git_project(tmp_path / "src", "slow", pyproject=SLOW_BUILD)
        (slow / "backend.py").write_text("import time\ntime.sleep(600)\n")
        tag_release(slow, "1.0")
        ctl(daemon, "repos", "add", f"{slow}:slow")
        config = "[watcher]\nenabled = false\nbuild-timeout = 2.0\n"
        (daemon.home / "config" / "insiders" / "config.toml").write_text(config)
        ctl(daemon, "reload")
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        assert result.returncode == 1
        [outcome] = json.loads(result.stdout.splitlines()[-1])["results"]
        assert "longer than 2 s" in outcome["error"]
