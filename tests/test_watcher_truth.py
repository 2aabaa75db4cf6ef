"""The watcher's record tells the truth (issue 22): `update`, `repos list`, `status` and their
`--json` read one record of each repository, and it is never stale.

Real git repositories, real `python -m build`, the real daemon and insidersctl.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support import Daemon, git_project, tag_release
from tests.test_watcher import ctl, files_of, start, wheelhouse
from tests.test_watcher_versions import repo_json, states

__all__ = ["wheelhouse"]  # the fixture, shared with tests/test_watcher.py

PAUSED = "[watcher]\nenabled = false\n"


def last_outcome(result: str) -> dict:  # type: ignore[type-arg]
    return json.loads(result.splitlines()[-1])["results"][0]


def test_a_repository_error_clears_with_the_next_check_that_works(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    daemon = start(tmp_path / "d", wheelhouse, PAUSED)
    try:
        repo = git_project(tmp_path / "src", "clearing")
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:clearing")
        ctl(daemon, "update", "--wait")

        # The repository cannot be listed: the check fails and says so.
        aside = tmp_path / "aside"
        shutil.move(repo, aside)
        failed = ctl(daemon, "update", "--wait", "--json", "clearing", check=False)
        assert failed.returncode == 1
        assert "git ls-remote failed" in repo_json(daemon, "clearing")["last_error"]
        assert "failing" in ctl(daemon, "repos", "list").stdout

        # It is back: the next check works, nothing is to build, and the error is gone everywhere.
        shutil.move(aside, repo)
        assert last_outcome(ctl(daemon, "update", "--wait", "--json").stdout)["outcome"] == (
            "up-to-date"
        )
        assert repo_json(daemon, "clearing")["last_error"] is None
        assert "failing" not in ctl(daemon, "repos", "list").stdout
        status = json.loads(ctl(daemon, "status", "--json").stdout)
        assert status["repos"][0]["last_error"] is None

        # A typo in --version is refused; it is not the repository's failure.
        typo = ctl(daemon, "update", "clearing", "--version", "99.0", "--json", check=False)
        assert typo.returncode == 1
        assert "--version 99.0: no tag names this version" in last_outcome(typo.stdout)["error"]
        assert repo_json(daemon, "clearing")["last_error"] is None
        assert "failing" not in ctl(daemon, "repos", "list").stdout
    finally:
        daemon.stop()


def test_removed_stays_removed_across_remove_and_add(tmp_path: Path, wheelhouse: Daemon) -> None:
    """A removal belongs to the project in the store, not to the repository that built it."""
    daemon = start(tmp_path / "d", wheelhouse, PAUSED)
    try:
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
    finally:
        daemon.stop()


def test_repos_set_changes_the_policy(tmp_path: Path, wheelhouse: Daemon) -> None:
    daemon = start(tmp_path / "d", wheelhouse, PAUSED)
    try:
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
    finally:
        daemon.stop()
