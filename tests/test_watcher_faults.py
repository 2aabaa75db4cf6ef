"""Faults in one repository's check stay in that repository; builds live in a box.

Each fault runs through the real daemon with another repository in the same daemon run, while a
thread asks the index for a page throughout: the index must answer every time, the daemon must
keep running, and the fault must be recorded as the failing repository's error.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.projects import in_tree_backend_pyproject
from tests.support import Daemon, GoSignal, git_project, tag_release
from tests.test_watcher import ctl, files_of, gone, logged_pid, start, watching, wheelhouse

__all__ = ["wheelhouse"]


@contextmanager
def index_answers(daemon: Daemon) -> Iterator[list[str]]:
    """Ask for /simple/ every 0.2 s while the block runs; yields the problems seen (none wanted)."""
    problems: list[str] = []
    answered = [0]
    stop = threading.Event()

    def ask() -> None:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    status = client.get("/simple/").status_code
                    answered[0] += 1
                    if status != 200:
                        problems.append(f"GET /simple/ answered {status}")
                except httpx.HTTPError as error:
                    problems.append(f"GET /simple/: {type(error).__name__}: {error}")
                stop.wait(0.2)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    try:
        yield problems
    finally:
        stop.set()
        thread.join()
    assert answered[0] > 0


def two_repos(tmp_path: Path, daemon: Daemon, victim_pyproject: str | None = None) -> Path:
    good = git_project(tmp_path / "src", "good")
    tag_release(good, "1.0")
    victim = git_project(tmp_path / "src", "victim", pyproject=victim_pyproject)
    tag_release(victim, "1.0")
    ctl(daemon, "repos", "add", f"{good}:good")
    ctl(daemon, "repos", "add", f"{victim}:victim")
    return victim


def update(daemon: Daemon) -> dict[str, dict]:  # type: ignore[type-arg]
    result = ctl(daemon, "update", "--wait", "--json", check=False)
    return {o["repo"]: o for o in json.loads(result.stdout.splitlines()[-1])["results"]}


def update_failing_the_victim(daemon: Daemon) -> str:
    """`update` while the index is asked all along: the index answers every time, good is
    published, victim fails. The victim's error."""
    with index_answers(daemon) as problems:
        outcomes = update(daemon)
    assert problems == []
    assert outcomes["good"]["outcome"] == "published"
    assert outcomes["victim"]["outcome"] == "failed"
    error: str = outcomes["victim"]["error"]
    return error


def still_running(daemon: Daemon) -> None:
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
    assert "Exceptions from Trio nursery" not in daemon.log()
    assert json.loads(ctl(daemon, "status", "--json").stdout)["pid"] == daemon.proc.pid


def recorded_error(daemon: Daemon, name: str) -> str:
    repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
    error: str = next(r for r in repos if r["name"] == name)["last_error"]
    return error


def test_a_log_directory_that_is_a_file(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        two_repos(tmp_path, daemon)
        (daemon.data_dir / "logs").mkdir(parents=True)
        (daemon.data_dir / "logs" / "victim").write_text("not a directory")
        error = update_failing_the_victim(daemon)
        assert error.startswith("internal error: FileExistsError:")
        assert "logs/victim" in error
        assert recorded_error(daemon, "victim") == error
        still_running(daemon)
        # Logged once, with its traceback, at error priority.
        log = daemon.log()
        assert log.count("ERROR   insiders.watcher.watcher: victim: the check stopped") == 1
        assert log.count("Traceback") == 1
        assert "good-1.0-py2.py3-none-any.whl" in files_of(daemon, "good")


def test_the_whole_log_directory_is_a_file(tmp_path: Path, wheelhouse: Daemon) -> None:
    """The issue's own reproduction: every build fails, and the daemon keeps serving."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        two_repos(tmp_path, daemon)
        (daemon.data_dir / "logs").write_text("not a directory")
        with index_answers(daemon) as problems:
            outcomes = update(daemon)
        assert problems == []
        for name in ("good", "victim"):
            assert outcomes[name]["error"].startswith("internal error: NotADirectoryError:")
            assert recorded_error(daemon, name) == outcomes[name]["error"]
        still_running(daemon)
        # The file gone, the same daemon builds both.
        (daemon.data_dir / "logs").unlink()
        outcomes = update(daemon)
        assert {o["outcome"] for o in outcomes.values()} == {"published"}


# The backend's sdist is not an archive: the daemon's own step that makes sdists reproducible
# raises on it, an exception no code path expects.
EXPLODING_BACKEND = """\
import os
from hatchling.build import *  # noqa: F403

def build_sdist(sdist_directory, config_settings=None):
    name = "victim-1.1.tar.gz"
    with open(os.path.join(sdist_directory, name), "wb") as file:
        file.write(b"this is not a gzip file")
    return name
"""


def test_an_exception_inside_a_build_step(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        victim = two_repos(tmp_path, daemon, in_tree_backend_pyproject("victim"))
        (victim / "backend.py").write_text(EXPLODING_BACKEND)
        tag_release(victim, "1.1")
        error = update_failing_the_victim(daemon)
        assert error.startswith("internal error: BadGzipFile: Not a gzipped")
        still_running(daemon)
        log = daemon.log()
        # One log record, with its traceback (from gzip, through the bounded archive reader).
        assert [line for line in log.splitlines() if "ERROR" in line and "victim" in line] == [
            line for line in log.splitlines() if "victim: the check stopped" in line
        ]
        assert log.count("victim: the check stopped") == 1
        assert "Traceback (most recent call last)" in log
        assert "reproducible.py" in log  # the traceback names where it happened
        assert files_of(daemon, "victim") == {}


def test_git_missing_from_path(tmp_path: Path, wheelhouse: Daemon) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("git", "nice", "bwrap"):
        (tools / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    home = tmp_path / "d"
    (home / "config" / "insiders").mkdir(parents=True)
    (home / "config" / "insiders" / "config.toml").write_text("[watcher]\nenabled = false\n")
    daemon = Daemon(home, ["--upstream", wheelhouse.index], env={"PATH": str(tools)}).start()
    try:
        two_repos(tmp_path, daemon)
        (tools / "git").unlink()
        with index_answers(daemon) as problems:
            outcomes = update(daemon)
        assert problems == []
        for name in ("good", "victim"):
            assert outcomes[name]["error"] == "cannot run git: No such file or directory"
            assert recorded_error(daemon, name) == outcomes[name]["error"]
        still_running(daemon)
        # git back: the same daemon builds both.
        (tools / "git").symlink_to(subprocess.check_output(["which", "git"], text=True).strip())
        outcomes = update(daemon)
        assert {o["outcome"] for o in outcomes.values()} == {"published"}
        assert recorded_error(daemon, "victim") is None
    finally:
        daemon.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_scratch_on_a_full_tmpfs(tmp_path: Path, wheelhouse: Daemon) -> None:
    home = tmp_path / "d"
    scratch = home / "cache" / "insiders" / "builds"
    scratch.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(scratch)], check=True)
    try:
        with watching(home, wheelhouse, "[watcher]\nenabled = false\n") as daemon:
            two_repos(tmp_path, daemon)
            filler = scratch / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
            )
            with index_answers(daemon) as problems:
                outcomes = update(daemon)
            assert problems == []
            for name in ("good", "victim"):
                assert outcomes[name]["outcome"] == "failed"
                assert "No space left on device" in outcomes[name]["error"]
            still_running(daemon)
            # Space again: the same daemon builds both.
            filler.unlink()
            # The 4 MiB tmpfs holds a checkout, not a build's environments: give it room.
            subprocess.run(["mount", "-o", "remount,size=256m", str(scratch)], check=True)
            outcomes = update(daemon)
            assert {o["outcome"] for o in outcomes.values()} == {"published"}
    finally:
        subprocess.run(["umount", "--lazy", str(scratch)], check=False)


def boxed_backend(outside: Path, go: GoSignal) -> str:
    """A backend that starts a `setsid` child, tries to write outside its scratch directory, and
    hangs until the test gives it the go."""
    return (
        go.code()
        + f"""\
import os, subprocess, time
from hatchling.build import *  # noqa: F403

child = subprocess.Popen(["setsid", "sleep", "600"])
print("SETSID PID", child.pid, flush=True)
try:
    open({str(outside)!r}, "w").write("escaped")
    print("WROTE OUTSIDE", flush=True)
except OSError as error:
    print("REFUSED OUTSIDE", error, flush=True)
print("BACKEND PID", os.getpid(), flush=True)
wait_for_go()
"""
    )


def test_kill_9_of_the_daemon_during_a_build(tmp_path: Path, wheelhouse: Daemon) -> None:
    """No build process survives the daemon, a setsid child included; the scratch directory is
    gone after the restart; the build could not write outside its scratch directory."""
    outside = tmp_path / "written-by-a-build"
    go = GoSignal()
    daemon = start(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n")
    scratch = daemon.home / "cache" / "insiders" / "builds"
    try:
        repo = git_project(tmp_path / "src", "boxed", pyproject=in_tree_backend_pyproject("boxed"))
        (repo / "backend.py").write_text(boxed_backend(outside, go))
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:boxed")
        ctl(daemon, "update", "--no-wait")
        log = daemon.data_dir / "logs" / "boxed" / "1.0.log"
        backend = logged_pid(log)
        setsid_child = logged_pid(log, "SETSID PID")
        assert not gone(setsid_child, wait=0.5)
        assert any(scratch.iterdir())
        # What it wrote at that path, if anything, went to its own throwaway /tmp.
        assert not outside.exists()

        daemon.kill()  # SIGKILL: no chance to clean up
        assert gone(backend, wait=20)
        assert gone(setsid_child, wait=20)
        assert any(scratch.iterdir())  # left behind by the killed daemon...

        daemon.start()
        ctl(daemon, "status")
        assert not any(scratch.iterdir())  # ...and removed at the start
        assert "removed 1 scratch director" in daemon.log()
        go.give()
        assert "published 1.0" in ctl(daemon, "update", "--wait").stdout
        assert not any(scratch.iterdir())  # a finished build leaves nothing either
    finally:
        go.close()
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()


def test_a_failure_of_the_core_names_its_real_cause(tmp_path: Path) -> None:
    """The build scratch directory is the daemon's own: a file in its place stops the start, and
    the log says what is wrong where, not which nursery held the error."""
    scratch = tmp_path / "cache" / "insiders" / "builds"
    scratch.parent.mkdir(parents=True)
    scratch.write_text("not a directory")
    daemon = Daemon(tmp_path, ["--upstream-mode", "none"]).start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1
    log = daemon.log()
    assert f"cannot start: [Errno 20] Not a directory: '{scratch}'" in log
    assert "Exceptions from Trio nursery" not in log
