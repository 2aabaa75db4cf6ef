"""Every version on its own, removed stays removed, a published file never changes.

Real git repositories, real `python -m build` (hatchling and setuptools from the wheelhouse), the
real daemon and insidersctl.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.projects import any_backend_pyproject
from tests.support import Daemon, git, git_project, tag_release, tag_releases
from tests.test_watcher import ctl, files_of, installed, start, watching, wheelhouse

__all__ = ["wheelhouse"]  # the fixture, shared with tests/test_watcher.py


def repo_json(daemon: Daemon, name: str) -> dict:  # type: ignore[type-arg]
    repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
    return next(r for r in repos if r["name"] == name)


def states(daemon: Daemon, name: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {v["version"]: v for v in repo_json(daemon, name)["version_states"]}


def test_a_broken_tag_never_blocks_the_others(tmp_path: Path, wheelhouse: Daemon) -> None:
    """v2.0 does not build; v3.0 and v1.0 are published in the same check, newest first."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "layered")
        tag_releases(repo, "1.0", "2.0", "3.0", broken="2.0")
        ctl(daemon, "repos", "add", "--all", f"{repo}:layered")
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        assert result.returncode == 1
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        building = [e["version"] for e in lines if e.get("stage") == "building"]
        assert building == ["3.0", "2.0", "1.0"]
        outcome = lines[-1]["results"][0]
        assert outcome["outcome"] == "failed"
        assert outcome["versions"] == ["3.0", "1.0"]
        [failure] = outcome["failures"]
        assert failure["version"] == "2.0"
        assert failure["error"] == "python -m build failed (exit status 1)"
        assert "not a valid requirement" in Path(failure["log"]).read_text()
        # The log path is in its own field, never inside the message.
        assert failure["log"] not in outcome["error"]
        assert installed(daemon, tmp_path / "t", "layered") == "3.0"

        recorded = states(daemon, "layered")
        assert recorded["2.0"]["status"] == "failed"
        assert recorded["2.0"]["attempts"] == 1
        assert recorded["2.0"]["retry_at"] > recorded["2.0"]["at"]
        assert recorded["3.0"]["status"] == recorded["1.0"]["status"] == "published"
        listing = ctl(daemon, "repos", "list")
        assert "failing" in listing.stdout
        said = "python -m build failed (exit status 1)"
        assert re.search(
            rf"layered 2\.0: failed .*: {re.escape(said)} \(log: {re.escape(failure['log'])}\); "
            r"retried in \d+",
            listing.stdout,
        )
        assert listing.stdout.count(failure["log"]) == 1

        # A person asking again retries the failed version (and only it) at once.
        again = ctl(daemon, "update", "--wait", "--json", check=False)
        lines = [json.loads(line) for line in again.stdout.splitlines()]
        assert [e["version"] for e in lines if e.get("stage") == "building"] == ["2.0"]
        assert states(daemon, "layered")["2.0"]["attempts"] == 2


@pytest.mark.parametrize("backend", ["hatchling", "setuptools"])
def test_removed_stays_removed_and_comes_back_with_the_same_bytes(
    tmp_path: Path, wheelhouse: Daemon, backend: str
) -> None:
    daemon = start(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n")
    name = f"repro-{backend}"
    try:
        pyproject = (
            any_backend_pyproject(name, requires=("setuptools",), backend="setuptools.build_meta")
            if backend == "setuptools"
            else None
        )
        repo = git_project(tmp_path / "src", name, pyproject=pyproject)
        tag_release(repo, "1.0")
        tag_release(repo, "2.0")
        ctl(daemon, "repos", "add", "--all", f"{repo}:{name}")
        assert f"{name}: published 2.0, 1.0" in ctl(daemon, "update", "--wait").stdout
        first = files_of(daemon, name)
        assert len(first) == 4

        ctl(daemon, "remove", name, "1.0", "--yes")
        # No check brings it back on its own, whatever the policy.
        assert "up-to-date" in ctl(daemon, "update", "--wait").stdout
        assert not any("-1.0" in f for f in files_of(daemon, name))
        assert states(daemon, name)["1.0"]["status"] == "removed"

        # Explicitly, it comes back: the same tag built again gives the same bytes.
        back = ctl(daemon, "update", name, "--version", "1.0", "--wait")
        assert f"{name}: published 1.0" in back.stdout
        assert files_of(daemon, name) == first
        assert states(daemon, name)["1.0"]["status"] == "published"
        for filename, sha256 in sorted(first.items()):
            if "-1.0" in filename:
                print(f"{backend}: {filename} sha256 {sha256} (built twice, identical)")
    finally:
        daemon.stop()


DRIFTING_HOOK = """\
import os

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        drift = os.path.join(self.root, "drift.txt")
        with open(drift, "w") as file:
            file.write(os.urandom(16).hex())
        build_data["force_include"][drift] = "drifting/drift.txt"
"""


def test_a_rebuild_with_other_bytes_is_refused(tmp_path: Path, wheelhouse: Daemon) -> None:
    """--force never replaces a published file: other bytes are refused and nothing changes.

    The refusal is the version's own state ("refused"), not a failure that pretends to retry:
    `repos list`, `update` and their --json say the same.
    """
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "drifting")
        # A build hook puts random bytes in the wheel: a build that does not reproduce.
        with (repo / "pyproject.toml").open("a") as file:
            file.write("[tool.hatch.build.targets.wheel.hooks.custom]\n")
        (repo / "hatch_build.py").write_text(DRIFTING_HOOK)
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:drifting")
        ctl(daemon, "update", "--wait")
        before = files_of(daemon, "drifting")

        result = ctl(daemon, "update", "--wait", "--force", "--json", "drifting", check=False)
        assert result.returncode == 1
        outcome = json.loads(result.stdout.splitlines()[-1])["results"][0]
        assert outcome["outcome"] == "refused"
        assert outcome["failures"] == []
        [refusal] = outcome["refused"]
        wheel = "drifting-1.0-py2.py3-none-any.whl"
        assert refusal["error"].startswith(
            f"{wheel} is published with other bytes (sha256 {before[wheel]};"
        )
        assert (
            "a published file never changes: tag a new version, or remove this one first"
            in refusal["error"]
        )
        assert "insidersctl update drifting --version 1.0" in refusal["error"]
        assert files_of(daemon, "drifting") == before
        with daemon.client() as client:
            assert client.get(f"/files/drifting/{wheel}").status_code == 200

        # Its own state: refused, never retried, and the repository is not failing.
        recorded = states(daemon, "drifting")["1.0"]
        assert recorded["status"] == "refused"
        assert recorded["retry_at"] is None
        assert repo_json(daemon, "drifting")["last_error"] is None
        assert repo_json(daemon, "drifting")["state"] == "refused"
        listing = ctl(daemon, "repos", "list").stdout
        assert "failing" not in listing
        assert "retried" not in listing
        assert "drifting 1.0: refused (bytes differ)" in listing
        # update and repos list agree: nothing to do, nothing failing.
        again = ctl(daemon, "update", "--wait", "--json", "drifting")
        assert json.loads(again.stdout.splitlines()[-1])["results"][0]["outcome"] == "up-to-date"
        assert states(daemon, "drifting")["1.0"]["status"] == "refused"


def test_no_version_tag_is_said(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "untagged")
        tag_release(repo, "1.0", tag="nightly")
        git(repo, "tag", "release-candidate")
        ctl(daemon, "repos", "add", f"{repo}:untagged")
        update = ctl(daemon, "update", "--wait")
        said = "no version tag among 2 tag(s) (ignored: nightly, release-candidate)"
        assert f"untagged: no-version-tag: {said}" in update.stdout
        listing = ctl(daemon, "repos", "list").stdout
        assert "no version tag" in listing
        assert "ignored: nightly, release-candidate" in listing
        assert repo_json(daemon, "untagged")["ignored_tags"] == ["nightly", "release-candidate"]
