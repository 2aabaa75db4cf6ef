"""Real projects on five build backends, watched as git repositories by one real daemon.

The sources are real published sdists (tests/real-sources.txt, downloaded by `make`), two
releases of each project; each project becomes a git repository with a commit and a tag per
release, as its maintainers tag them. One daemon with the default settings (one build at a time)
watches all of them with `--all`: every tag must become an installable package whose version is
its tag, a broken tag must be recorded as failed with its log while the others build, and
rebuilding every published version must give the same bytes (the daemon refuses anything else).

Build backends come from a local upstream serving the wheelhouse `make` downloaded, so no build
reaches the public network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, Daemon, git, isolated_env, pip_install, run_ctl, serve_wheelhouse

SOURCES = Path(__file__).parent.parent / ".cache" / "real-sources"


@dataclass(frozen=True)
class Project:
    dist: str
    backend: str  # the build-backend its pyproject.toml names (its helpers in the comment)
    releases: tuple[str, ...]  # oldest first
    tag_prefix: str = ""  # as the project tags its releases

    @property
    def sdist_stem(self) -> str:
        return self.dist.replace("-", "_")


PROJECTS = (
    Project("tomli", "flit_core.buildapi", ("2.4.1", "2.5.0")),
    # setuptools-scm: the version comes from the git tag, as in the project's own repository.
    Project("pluggy", "setuptools.build_meta", ("1.6.0", "1.7.0")),
    # + hatch-vcs (the version from the tag) + hatch-fancy-pypi-readme (a metadata hook). Build
    # requirements resolve through the index under test: hatchling's pluggy is the one built from
    # the tags above once published (the upstream's before that), and either must do.
    Project("attrs", "hatchling.build", ("25.4.0", "26.1.0")),
    Project("rich", "poetry.core.masonry.api", ("14.3.4", "15.0.0"), tag_prefix="v"),
    # Builds itself (backend-path, no build requirements).
    Project("pdm-backend", "pdm.backend.intree", ("2.4.10", "2.5.0")),
)
# A tag between tomli's two releases whose pyproject.toml does not parse: it must fail, with its
# log, and the releases on either side of it must still be published.
BROKEN = ("tomli", "2.5.0rc1")


def sdist(project: Project, version: str) -> Path:
    path = SOURCES / f"{project.sdist_stem}-{version}.tar.gz"
    assert path.exists(), f"{path} is missing: run `make .cache/real-sources/.complete`"
    return path


def replace_tree(repo: Path, archive: Path) -> None:
    """The working tree becomes the sdist's contents (its top directory stripped) but PKG-INFO,
    which a backend writes into an sdist and no project keeps in git: without it,
    setuptools-scm and hatch-vcs can read the version from nothing but the tag (they fall back
    to PKG-INFO only where there is no git metadata)."""
    for child in repo.iterdir():
        if child.is_dir() and child.name != ".git":
            shutil.rmtree(child)
        elif child.name != ".git":
            child.unlink()
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            _, _, inner = member.name.partition("/")
            if inner and inner != "PKG-INFO":
                member.name = inner
                members.append(member)
        tar.extractall(repo, members=members, filter="data")


def commit_and_tag(repo: Path, message: str, tag: str, when: int) -> None:
    """Commit what the project's own .gitignore lets in, and tag. The commit's time is fixed:
    it becomes the build's SOURCE_DATE_EPOCH."""
    stamp = f"@{when} +0000"
    git(repo, "add", "-A")
    subprocess.run(
        ["git", "-C", str(repo), "commit", "--quiet", "-m", message],
        env={
            **isolated_env(repo.parent),
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
        },
        check=True,
        capture_output=True,
    )
    git(repo, "tag", tag)


def real_repository(where: Path, project: Project) -> Path:
    """A git repository of `project` with a commit and a tag per release (and the broken tag)."""
    repo = where / project.dist
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "--initial-branch", "main")
    when = 1_700_000_000
    for version in project.releases:
        if BROKEN[0] == project.dist and version == project.releases[-1]:
            pyproject = repo / "pyproject.toml"
            pyproject.write_text(pyproject.read_text().replace("]", "", 1))
            commit_and_tag(repo, "a pyproject.toml that does not parse", BROKEN[1], when)
            when += 86_400
        replace_tree(repo, sdist(project, version))
        commit_and_tag(repo, f"release {version}", f"{project.tag_prefix}{version}", when)
        when += 86_400
    return repo


def ctl(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """insidersctl that must succeed unless told otherwise; real projects build slowly."""
    return run_ctl(daemon, *args, check=check, timeout=600)


def files_of(daemon: Daemon, project: str) -> dict[str, str]:
    """{filename: sha256} as the index lists them (PEP 691)."""
    with daemon.client() as client:
        response = client.get(
            f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    assert response.status_code == 200, f"{project}: {response.status_code}"
    return {f["filename"]: f["hashes"]["sha256"] for f in response.json()["files"]}


def repos_listed(daemon: Daemon) -> dict[str, dict[str, Any]]:
    listing = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
    return {r["name"]: r for r in listing}


@dataclass
class Run:
    daemon: Daemon
    outcomes: dict[str, dict[str, Any]]  # the first `update --wait --json`, by repository


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """All five repositories added with --all to one daemon (default max-builds), then one
    `update --wait`."""
    upstream = Daemon(tmp_path_factory.mktemp("wheelhouse"), ["--upstream-mode", "none"]).start()
    src = tmp_path_factory.mktemp("repos")
    home = tmp_path_factory.mktemp("daemon")
    (home / "config" / "insiders").mkdir(parents=True)
    # Paused, so that the update below (not a periodic check) builds everything.
    (home / "config" / "insiders" / "config.toml").write_text("[watcher]\nenabled = false\n")
    daemon = Daemon(home, ["--upstream", upstream.index])
    try:
        serve_wheelhouse(upstream)
        repos = [real_repository(src, project) for project in PROJECTS]
        daemon.start()
        for project, repo in zip(PROJECTS, repos, strict=True):
            ctl(daemon, "repos", "add", "--all", f"{repo}:{project.dist}")
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        assert result.returncode == 1, result.stdout  # one repository had a failure
        outcomes = {o["repo"]: o for o in json.loads(result.stdout.splitlines()[-1])["results"]}
        yield Run(daemon, outcomes)
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()
        upstream.stop()


def test_every_tag_of_every_backend_is_published_as_its_version(run: Run) -> None:
    for project in PROJECTS:
        outcome = run.outcomes[project.dist]
        # Newest first: the version a sponsor wants most lands first.
        assert outcome["versions"] == list(reversed(project.releases)), outcome
        stem = project.sdist_stem
        expected = set()
        for version in project.releases:
            expected.add(f"{stem}-{version}.tar.gz")
            expected.add(f"{stem}-{version}-py3-none-any.whl")
            # Each build log's header names the backend the sources declare.
            log = run.daemon.data_dir / "logs" / project.dist / f"{version}.log"
            assert f"insiders: build backend: {project.backend} " in log.read_text()
        assert set(files_of(run.daemon, project.dist)) == expected, project.backend


def test_the_broken_tag_failed_with_its_log_and_did_not_stop_the_others(run: Run) -> None:
    name, version = BROKEN
    outcome = run.outcomes[name]
    [failure] = outcome["failures"]
    assert failure["version"] == version
    assert "python -m build failed" in failure["error"]
    log = Path(failure["log"]).read_text()
    assert "insiders: sandbox: bubblewrap" in log
    assert "insiders: build backend: unknown: pyproject.toml does not parse" in log
    assert "Failed to parse" in log
    record = repos_listed(run.daemon)[name]
    states = {v["version"]: v["status"] for v in record["version_states"]}
    assert states == {"2.5.0": "published", version: "failed", "2.4.1": "published"}
    # Every other repository is fine, and none reports a failure.
    for project in PROJECTS:
        if project.dist != name:
            assert run.outcomes[project.dist]["outcome"] == "published"
            assert run.outcomes[project.dist]["failures"] == []


def test_real_pip_installs_each_backend_s_wheel(run: Run, tmp_path: Path) -> None:
    """Real pip, from the served index alone, installs the newest release of each project;
    without their dependencies (the test's upstream holds build backends only)."""
    target = tmp_path / "site"
    pip_install(
        run.daemon.index,
        target,
        "--no-deps",
        "--only-binary",
        ":all:",
        *(p.dist for p in PROJECTS),
    )
    installed = {d.metadata["Name"].lower(): d.version for d in distributions(path=[str(target)])}
    assert installed == {p.dist: p.releases[-1] for p in PROJECTS}
    # The sdist installs too (built by pip from what the watcher published), older release.
    old = tmp_path / "old"
    pip_install(run.daemon.index, old, "--no-deps", "--no-binary", "tomli", "tomli==2.4.1")
    assert [d.version for d in distributions(path=[str(old)])] == ["2.4.1"]


def test_rebuilding_every_published_version_gives_identical_bytes(run: Run) -> None:
    before = {p.dist: files_of(run.daemon, p.dist) for p in PROJECTS}
    # One rebuild of each published version, all asked at once; the daemon builds one at a time.
    rebuilds = []
    for project in PROJECTS:
        versions = [a for v in project.releases for a in ("--version", v)]
        command = [str(BIN / "insidersctl"), "update", "--wait", "--json", *versions, project.dist]
        rebuilds.append(
            subprocess.Popen(
                command, env=isolated_env(run.daemon.home), stdout=subprocess.PIPE, text=True
            )
        )
    for project, process in zip(PROJECTS, rebuilds, strict=True):
        stdout, _ = process.communicate(timeout=600)
        assert process.returncode == 0, stdout
        [outcome] = json.loads(stdout.splitlines()[-1])["results"]
        assert outcome["refused"] == [], outcome
        assert outcome["versions"] == [], outcome  # nothing published anew
        rebuilt = ", ".join(reversed(project.releases))
        assert f"rebuilt {rebuilt}: identical bytes" in outcome["message"], outcome
    assert {p.dist: files_of(run.daemon, p.dist) for p in PROJECTS} == before
    listing = repos_listed(run.daemon)
    for project in PROJECTS:
        # tomli's failed tag keeps it failing (retried at its backoff time) though newer
        # versions are published; the rebuilds did not change that.
        expected = "failing" if project.dist == BROKEN[0] else "ok"
        assert listing[project.dist]["state"] == expected, listing[project.dist]
        statuses = {v["status"] for v in listing[project.dist]["version_states"]}
        assert "refused" not in statuses


def test_the_files_are_the_bytes_the_index_lists(run: Run) -> None:
    """What pip downloads is what the pages promise (the store's files match their hashes)."""
    with run.daemon.client() as client:
        for project in PROJECTS:
            page = client.get(
                f"/simple/{project.dist}/",
                headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            ).json()
            for entry in page["files"]:
                data = client.get(entry["url"]).content
                assert hashlib.sha256(data).hexdigest() == entry["hashes"]["sha256"]
