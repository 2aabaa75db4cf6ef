"""The watcher's record tells the truth (issue 22): `update`, `repos list`, `status` and their
`--json` read one record of each repository, and it is never stale.

Real git repositories, real `python -m build`, the real daemon and insidersctl.
"""

from __future__ import annotations

import io
import json
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.projects import broken_pyproject, in_tree_backend_pyproject
from tests.support import (
    BIN,
    Daemon,
    GoSignal,
    free_port,
    git,
    git_project,
    isolated_env,
    make_wheel,
    tag_release,
    tag_releases,
    wheel_filename,
)
from tests.test_watcher import ctl, files_of, gone, logged_pid, start, watched, watching, wheelhouse
from tests.test_watcher_versions import repo_json, states

__all__ = ["wheelhouse"]  # the fixture, shared with tests/test_watcher.py

PAUSED = "[watcher]\nenabled = false\n"


def last_outcome(result: str) -> dict:  # type: ignore[type-arg]
    return json.loads(result.splitlines()[-1])["results"][0]


def said_everywhere(daemon: Daemon) -> set[str]:
    """The one repository's state as `repos list --json`, `status --json` and the web page say
    it."""
    listed = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"][0]["state"]
    status = json.loads(ctl(daemon, "status", "--json").stdout)["repos"][0]["state"]
    with daemon.client() as client:
        page = client.get("/builds/").text
    shown = set(re.findall(r'class="state state-([a-z-]+)"', page))
    return {listed, status, *shown}


def test_a_repository_error_clears_with_the_next_check_that_works(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = watched(daemon, tmp_path / "src", "clearing")

        # The repository cannot be listed: the check fails and says so.
        aside = tmp_path / "aside"
        shutil.move(repo, aside)
        failed = ctl(daemon, "update", "--wait", "--json", "clearing", check=False)
        assert failed.returncode == 1
        assert "git ls-remote failed" in repo_json(daemon, "clearing")["last_error"]
        assert "failing" in ctl(daemon, "repos", "list").stdout
        assert said_everywhere(daemon) == {"failing"}

        # It is back: the next check works, nothing is to build, and the error is gone everywhere.
        shutil.move(aside, repo)
        assert last_outcome(ctl(daemon, "update", "--wait", "--json").stdout)["outcome"] == (
            "up-to-date"
        )
        assert repo_json(daemon, "clearing")["last_error"] is None
        assert "failing" not in ctl(daemon, "repos", "list").stdout
        status = json.loads(ctl(daemon, "status", "--json").stdout)
        assert status["repos"][0]["last_error"] is None
        assert said_everywhere(daemon) == {"ok"}

        # A typo in --version is refused; it is not the repository's failure.
        typo = ctl(daemon, "update", "clearing", "--version", "99.0", "--json", check=False)
        assert typo.returncode == 1
        assert "--version 99.0: no tag names this version" in last_outcome(typo.stdout)["error"]
        assert repo_json(daemon, "clearing")["last_error"] is None
        assert "failing" not in ctl(daemon, "repos", "list").stdout

        # A version that failed, and whose tag is then deleted, is not failing any more.
        (repo / "pyproject.toml").write_text(broken_pyproject("clearing"))
        tag_release(repo, "2.0")
        assert ctl(daemon, "update", "--wait", check=False).returncode == 1
        assert said_everywhere(daemon) == {"failing"}
        git(repo, "tag", "-d", "v2.0")
        assert ctl(daemon, "update", "--wait").returncode == 0
        assert said_everywhere(daemon) == {"ok"}


def test_removed_stays_removed_across_remove_and_add(tmp_path: Path, wheelhouse: Daemon) -> None:
    """A removal belongs to the project in the store, not to the repository that built it."""
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = git_project(tmp_path / "src", "kept-out")
        tag_release(repo, "1.0")
        tag_release(repo, "2.0")
        ctl(daemon, "repos", "add", "--all", f"{repo}:kept-out")
        assert "kept-out: published 2.0, 1.0" in ctl(daemon, "update", "--wait").stdout
        ctl(daemon, "remove", "kept-out", "1.0", "--yes")

        ctl(daemon, "repos", "remove", "kept-out")
        ctl(daemon, "repos", "add", "--all", f"{repo}:kept-out")
        assert "up-to-date" in ctl(daemon, "update", "--wait").stdout
        assert not any("-1.0" in f for f in files_of(daemon, "kept-out"))
        assert states(daemon, "kept-out")["1.0"]["status"] == "removed"
        # Asked for, it comes back.
        back = ctl(daemon, "update", "kept-out", "--version", "1.0", "--wait")
        assert "kept-out: published 1.0" in back.stdout
        assert states(daemon, "kept-out")["1.0"]["status"] == "published"


def test_repos_set_changes_the_policy(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = git_project(tmp_path / "src", "policy")
        for version in ("1.0", "2.0", "3.0"):
            tag_release(repo, version)
        ctl(daemon, "repos", "add", f"{repo}:policy")
        assert "policy: published 3.0" in ctl(daemon, "update", "--wait").stdout

        said = ctl(daemon, "repos", "set", "policy", "--since", "2.0").stdout
        assert "policy: since 2.0" in said
        assert "policy: published 2.0" in ctl(daemon, "update", "--wait").stdout
        ctl(daemon, "repos", "set", "policy", "--all")
        assert repo_json(daemon, "policy")["versions"] == "all"
        assert "policy: published 1.0" in ctl(daemon, "update", "--wait").stdout
        assert set(files_of(daemon, "policy")) >= {f"policy-{v}.0.tar.gz" for v in ("1", "2", "3")}

        refused = ctl(daemon, "repos", "set", "policy", "--publish-to", "nowhere", check=False)
        assert refused.returncode == 1
        assert "no [targets.nowhere]" in refused.stderr
        ctl(daemon, "repos", "set", "policy", "--newest")
        assert repo_json(daemon, "policy")["versions"] == "newest"


def waiting_project(where: Path, name: str, go: GoSignal) -> Path:
    """hatchling, with a build that waits until the test says go (a loopback port: see GoSignal)."""
    repo = git_project(where, name, pyproject=in_tree_backend_pyproject(name))
    (repo / "backend.py").write_text(
        "import os\nfrom hatchling.build import *  # noqa: F403\n"
        + go.code()
        + "print('BACKEND PID', os.getpid(), flush=True)\nwait_for_go()\n"
    )
    tag_release(repo, "1.0")
    return repo


def events_of(process: subprocess.Popen[str]) -> queue.Queue[dict]:  # type: ignore[type-arg]
    """Each line of `update --json`, decoded, as it comes."""
    events: queue.Queue[dict] = queue.Queue()  # type: ignore[type-arg]
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        text = ""
        for line in stdout:
            text += line
            try:
                events.put(json.loads(text))
            except json.JSONDecodeError:
                continue  # an object over several lines (the report)
            text = ""

    threading.Thread(target=read, daemon=True).start()
    return events


def next_event(events: queue.Queue[dict], matching: Callable[[dict], bool]) -> list[dict]:  # type: ignore[type-arg]
    """The events up to the first that matches (the last of them)."""
    seen = []
    while not seen or not matching(seen[-1]):
        try:
            seen.append(events.get(timeout=90))
        except queue.Empty:
            raise AssertionError(f"no such event, only {seen}") from None
    return seen


def test_a_check_slot_is_for_listing_and_fetching(tmp_path: Path, wheelhouse: Daemon) -> None:
    """With one check slot and one build slot, the second repository lists and fetches while the
    first builds, then waits for the build slot, and says so."""
    config = "[watcher]\nenabled = false\nmax-checks = 1\nmax-builds = 1\n"
    daemon = start(tmp_path / "d", wheelhouse, config)
    go = GoSignal()
    try:
        for name in ("slot-a", "slot-b"):
            repo = waiting_project(tmp_path / "src", name, go)
            ctl(daemon, "repos", "add", f"{repo}:{name}")
        update = subprocess.Popen(
            [str(BIN / "insidersctl"), "update", "--wait", "--json"],
            env=isolated_env(daemon.home),
            stdout=subprocess.PIPE,
            text=True,
        )
        events = events_of(update)
        # Every repository is there from the start, in the order of their names.
        first = [events.get(timeout=30), events.get(timeout=30)]
        assert [(e["repo"], e["stage"]) for e in first] == [
            ("slot-a", "queued"),
            ("slot-b", "queued"),
        ]
        seen = next_event(events, lambda e: e.get("stage") == "building")
        other = ({"slot-a", "slot-b"} - {seen[-1]["repo"]}).pop()
        # The other repository is listed and fetched while the first builds, then waits.
        seen += next_event(events, lambda e: e.get("stage") == "waiting")
        assert seen[-1]["repo"] == other
        assert seen[-1]["message"] == "waiting for a build slot"
        assert {"listing", "fetching"} <= {e["stage"] for e in seen if e["repo"] == other}
        go.give()
        next_event(events, lambda e: "results" in e)  # the report: the reader is at the end
        assert update.wait(120) == 0
        assert update.stdout is not None
        update.stdout.close()
        for name in ("slot-a", "slot-b"):
            assert repo_json(daemon, name)["last_published"] == "1.0"
    finally:
        go.give()
        daemon.stop()
        go.close()


def test_the_live_view_clock_starts_when_a_repository_works() -> None:
    """Waiting for a check slot or a build slot shows no clock; it starts when the work does."""
    from insidersctl import protocol as p
    from insidersctl.progress import LiveView
    from insidersctl.terminal import Terminal

    now = [100.0]
    view = LiveView(Terminal(io.StringIO(), env={}), now=lambda: now[0])
    for name in ("a", "b"):
        view.event(p.Progress(repo=name, stage="queued", message="waiting for a check slot"))
    now[0] = 160.0
    view.event(p.Progress(repo="b", stage="listing"))
    view.event(
        p.Progress(repo="b", stage="waiting", version="24.3.0", message="waiting for a build slot")
    )
    now[0] = 190.0
    lines = view.lines(120)
    assert [line.split()[0] for line in lines] == ["a", "b"]  # every one, in order
    assert lines[1].split()[1:4] == ["waiting", "24.3.0", "waiting"]  # no clock, not publishing
    view.event(p.Progress(repo="b", stage="building", version="24.3.0"))
    now[0] = 195.0
    assert "0:05" in view.lines(120)[1]


def test_a_broken_mirror_is_moved_aside_and_fetched_again(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = watched(daemon, tmp_path / "src", "mended")
        mirror = daemon.home / "cache" / "insiders" / "mirrors" / "mended"

        # Its objects are a file: git cannot read the mirror.
        shutil.rmtree(mirror / "objects")
        (mirror / "objects").write_text("x")
        tag_release(repo, "2.0")
        assert "mended: published 2.0" in ctl(daemon, "update", "--wait").stdout
        assert "mended: the git mirror cannot be read" in daemon.log()
        assert "moved aside to" in daemon.log()

        # The mirror is a file (once a FileExistsError, an internal error).
        shutil.rmtree(mirror)
        mirror.write_text("x")
        forced = ctl(daemon, "update", "--wait", "--force", "mended")
        assert "rebuilt 2.0: identical bytes, nothing changed" in forced.stdout
        assert repo_json(daemon, "mended")["last_error"] is None


def test_every_build_is_logged(tmp_path: Path, wheelhouse: Daemon) -> None:
    """An INFO line when a build starts and when it is published (files, sha256, seconds); the
    reason when it fails."""
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        good = git_project(tmp_path / "src", "told")
        tag_release(good, "1.0")
        broken = git_project(tmp_path / "src", "untold", pyproject=broken_pyproject("untold"))
        tag_release(broken, "1.0")
        for spec in (f"{good}:told", f"{broken}:untold"):
            ctl(daemon, "repos", "add", spec)
        ctl(daemon, "update", "--wait", check=False)
        log = ctl(daemon, "watcher", "logs", "-n", "all").stdout
        told = files_of(daemon, "told")
        for name in ("told", "untold"):
            assert re.search(rf"INFO .*{name} 1\.0: building v1\.0, commit [0-9a-f]{{40}}", log)
        published = re.search(r"INFO .*told 1\.0: published (.*) in (\d+\.\d) s", log)
        assert published, log
        for filename, sha256 in told.items():
            assert f"{filename} (sha256 {sha256})" in published.group(1)
        assert re.search(r"ERROR .*untold 1\.0: python -m build failed \(exit status 1\)", log)


def test_logs_build_shows_the_newest_version_s_failure(tmp_path: Path, wheelhouse: Daemon) -> None:
    """2.0 fails, then 1.0 builds (newest first): the log asked for is 2.0's, and it says so."""
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = git_project(tmp_path / "src", "why")
        tag_releases(repo, "1.0", "2.0", broken="2.0")
        ctl(daemon, "repos", "add", "--all", f"{repo}:why")
        ctl(daemon, "update", "--wait", check=False)

        shown = ctl(daemon, "logs", "--build", "why")
        assert "not a valid requirement" in shown.stdout
        assert "the build of why 2.0, the newest version, failed" in shown.stderr
        # Its header: what was built, how, with what.
        header = shown.stdout.splitlines()[:6]
        assert header[0].startswith("insiders: sandbox: ")
        assert any(line.startswith("insiders: tag: v2.0, commit ") for line in header)
        assert any(line.startswith("insiders: python: 3.") for line in header), header
        assert "insiders: build backend: hatchling.build (requires: hatchling)" in header

        published = ctl(daemon, "logs", "--build", "why", "1.0")
        assert "not a valid requirement" not in published.stdout

        # A check that builds 1.0 alone leaves 2.0 failing: update says so, as repos list does.
        again = ctl(daemon, "update", "why", "--version", "1.0", "--json")
        assert last_outcome(again.stdout)["state"] == "failing"
        plain = ctl(daemon, "update", "why", "--version", "1.0")
        assert "why: up-to-date: rebuilt 1.0: identical bytes, nothing changed (still failing" in (
            plain.stdout
        )


def test_a_clean_stop_during_a_build_cleans_up(tmp_path: Path, wheelhouse: Daemon) -> None:
    daemon = start(tmp_path / "d", wheelhouse, PAUSED)
    go = GoSignal()
    try:
        repo = waiting_project(tmp_path / "src", "stopped", go)
        ctl(daemon, "repos", "add", f"{repo}:stopped")
        ctl(daemon, "update", "--no-wait")
        backend = logged_pid(daemon.data_dir / "logs" / "stopped" / "1.0.log")
        scratch = daemon.home / "cache" / "insiders" / "builds"
        assert list(scratch.iterdir())  # the build's scratch directory
        assert daemon.stop() == 0
        assert gone(backend)
        assert list(scratch.iterdir()) == []
        daemon.start()
        assert "left by builds before a crash" not in daemon.log()
    finally:
        go.give()
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()
        go.close()


def test_the_end_of_update_counts_versions(tmp_path: Path, wheelhouse: Daemon) -> None:
    """On a terminal: two versions published and one failed in one repository are counted as
    such, the failed row names the failed version, and a long version keeps the columns."""
    from tests.test_ctl_terminal import Terminal, env_for

    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        mixed = git_project(tmp_path / "src", "mixed")
        tag_releases(mixed, "1.0", "2.0", "3.0", broken="2.0")
        long = git_project(tmp_path / "src", "long")
        tag_release(long, "2024.10.15rc3")
        ctl(daemon, "repos", "add", "--all", f"{mixed}:mixed")
        ctl(daemon, "repos", "add", f"{long}:long")
        term = Terminal(["update", "--wait"], env_for(daemon))
        assert term.wait() == 1
        lines = term.text().splitlines()
        summary = next(line for line in lines if line.startswith("checked "))
        assert summary.endswith("3 versions published, 1 version failed"), summary
        row = next(line for line in lines if line.startswith("mixed "))
        assert row.split()[1:3] == ["failed", "2.0"], row
        assert "published 3.0, 1.0" in row
        other = next(line for line in lines if line.startswith("long "))
        # The clocks line up: the version column fits the longest version.
        clock = re.compile(r"\d+:\d\d")
        assert clock.search(row).start() == clock.search(other).start()  # type: ignore[union-attr]


def test_repos_add_starts_a_check(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\ninterval = 3600.0\n") as daemon:
        # The first periodic check (a few seconds after the start) is over: none is near.
        deadline = time.monotonic() + 30
        while (
            json.loads(ctl(daemon, "watcher", "status", "--json").stdout)["watcher"]["next_check"]
            < time.time() + 600
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        repo = git_project(tmp_path / "src", "eager")
        tag_release(repo, "1.0")
        added = ctl(daemon, "repos", "add", f"{repo}:eager")
        assert "checking it now" in added.stdout + added.stderr
        deadline = time.monotonic() + 90
        while repo_json(daemon, "eager")["last_published"] != "1.0":
            assert time.monotonic() < deadline, repo_json(daemon, "eager")
            time.sleep(0.3)

        # Paused, it says how to build now.
        ctl(daemon, "watcher", "stop")
        other = git_project(tmp_path / "src", "patient")
        tag_release(other, "1.0")
        added = ctl(daemon, "repos", "add", f"{other}:patient")
        assert "insidersctl update patient" in added.stdout + added.stderr


def test_a_reload_never_points_the_index_at_itself(tmp_path: Path) -> None:
    """pip is configured to use this index; a reload that changes the port (which takes effect
    at restart) must keep comparing pip's index with the address the index runs on."""
    running, next_port = free_port(), free_port()
    config = tmp_path / "d" / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {running}\n')
    itself = f"http://127.0.0.1:{running}/simple/"
    daemon = Daemon(tmp_path / "d", env={"PIP_INDEX_URL": itself}).start(port=None)
    try:
        assert json.loads(ctl(daemon, "status", "--json").stdout)["upstream"] != itself
        config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {next_port}\n')
        reloaded = ctl(daemon, "reload")
        assert "server.port" in reloaded.stderr
        assert json.loads(ctl(daemon, "status", "--json").stdout)["upstream"] != itself
        with daemon.client() as client:
            answer = client.get("/simple/not-hosted-here/")
        assert not answer.headers.get("location", "").startswith(itself)
    finally:
        daemon.stop()


def test_a_failure_is_over_once_the_version_is_uploaded(tmp_path: Path, wheelhouse: Daemon) -> None:
    """The tag does not build; the version is uploaded by hand: nothing is failing any more."""
    with watching(tmp_path / "d", wheelhouse, PAUSED) as daemon:
        repo = git_project(tmp_path / "src", "handmade", pyproject=broken_pyproject("handmade"))
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:handmade")
        assert ctl(daemon, "update", "--wait", check=False).returncode == 1
        assert said_everywhere(daemon) == {"failing"}
        wheel = tmp_path / wheel_filename("handmade", "1.0")
        wheel.write_bytes(make_wheel("handmade", "1.0"))
        assert daemon.upload(wheel).status_code == 200
        update = ctl(daemon, "update", "--wait", "--json")
        assert last_outcome(update.stdout)["outcome"] == "up-to-date"
        assert said_everywhere(daemon) == {"ok"}
        assert "1.0" not in states(daemon, "handmade")
