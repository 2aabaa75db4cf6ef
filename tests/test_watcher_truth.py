"""The watcher's record tells the truth (issue 22): `update`, `repos list`, `status` and their
`--json` read one record of each repository, and it is never stale.

Real git repositories, real `python -m build`, the real daemon and insidersctl.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support import Daemon, git_project, tag_release
from tests.test_watcher import ctl, start, wheelhouse
from tests.test_watcher_versions import repo_json

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
