"""The watched-repository registry: SPEC tables, reading DIST from a repository, persistence."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from insiders.errors import RepoError, SpecError
from insiders.repos.registry import REPOS_FILE, Repos, RepoState, make_repo
from insiders.repos.source import read_dist_name, resolve_dist
from insiders.repos.spec import ParsedSpec, Source, parse_spec

CWD = "/home/me/src"


def gh(location: str, dist: str | None = None) -> ParsedSpec:
    return ParsedSpec(source=Source(kind="github", location=location), dist=dist)


def git(location: str, dist: str | None = None) -> ParsedSpec:
    return ParsedSpec(source=Source(kind="git", location=location), dist=dist)


def path(location: str, dist: str | None = None) -> ParsedSpec:
    return ParsedSpec(source=Source(kind="path", location=location), dist=dist)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        # GitHub shorthand
        (
            "squidfunk/mkdocs-material-insiders:mkdocs-material",
            gh("squidfunk/mkdocs-material-insiders", "mkdocs-material"),
        ),
        ("pawamoy-insiders/mkdocstrings-python", gh("pawamoy-insiders/mkdocstrings-python")),
        ("owner/repo.git:Dist_Name", gh("owner/repo", "Dist_Name")),
        ("a/b.c", gh("a/b.c")),
        ("  owner/repo:d  ", gh("owner/repo", "d")),
        # URLs
        ("https://github.com/owner/repo.git", git("https://github.com/owner/repo.git")),
        (
            "https://github.com/owner/repo.git:dist",
            git("https://github.com/owner/repo.git", "dist"),
        ),
        (
            "https://git.example:8443/group/sub/repo:my.dist",
            git("https://git.example:8443/group/sub/repo", "my.dist"),
        ),
        ("HTTPS://host/r", git("HTTPS://host/r")),
        ("http://localhost:3000/r.git:x", git("http://localhost:3000/r.git", "x")),
        (
            "ssh://git@host:2222/owner/repo.git:dist",
            git("ssh://git@host:2222/owner/repo.git", "dist"),
        ),
        ("ssh://git@host/~user/repo", git("ssh://git@host/~user/repo")),
        ("git://host/repo:dist", git("git://host/repo", "dist")),
        ("git+ssh://git@host/repo", git("git+ssh://git@host/repo")),
        ("file:///srv/git/repo.git:dist", git("file:///srv/git/repo.git", "dist")),
        ("file://localhost/srv/git/repo/", git("file:///srv/git/repo")),
        # scp-like ssh
        ("git@github.com:owner/repo.git", git("git@github.com:owner/repo.git")),
        (
            "git@github.com:owner/repo.git:mkdocs-material",
            git("git@github.com:owner/repo.git", "mkdocs-material"),
        ),
        ("gh-alias:owner/repo:dist", git("gh-alias:owner/repo", "dist")),
        ("host:repo", git("host:repo")),
        ("host:/abs/path/repo:x", git("host:/abs/path/repo", "x")),
        # local paths
        ("/srv/repos/project", path("/srv/repos/project")),
        ("/srv/repos/project:dist", path("/srv/repos/project", "dist")),
        ("/srv/repos/project/:dist", path("/srv/repos/project", "dist")),
        ("./project:dist", path(f"{CWD}/project", "dist")),
        ("../other/project", path("/home/me/other/project")),
        (".", path(CWD)),
        (".:dist", path(CWD, "dist")),
        ("..:dist", path("/home/me", "dist")),
        ("/srv/odd:name/repo", path("/srv/odd:name/repo")),
    ],
)
def test_valid_specs(spec: str, parsed: ParsedSpec) -> None:
    assert parse_spec(spec, CWD) == parsed


def test_a_home_path_is_the_daemons_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/daemon")
    assert parse_spec("~/src/repo:d") == path("/home/daemon/src/repo", "d")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty SPEC"),
        ("   ", "empty SPEC"),
        ("owner/repo :dist", "no spaces"),
        (
            "mkdocs-material",
            "names no repository: use OWNER/REPO for GitHub, a git URL, or ./mkdocs-material",
        ),
        ("a/b/c", "OWNER/REPO has one slash; a local path starts with /, ./ or ~/"),
        ("a/b/c:dist", "OWNER/REPO has one slash"),
        ("-owner/repo", "does not start with '-' (for a path, write ./-owner/repo)"),
        # Options git would run a command for: never taken as a repository.
        ("--upload-pack=touch${IFS}PWNED:x:evil", "a SPEC does not start with '-'"),
        ("-utouch${IFS}PWNED:x", "a SPEC does not start with '-'"),
        ("-oProxyCommand=touch${IFS}PWNED:x", "a SPEC does not start with '-'"),
        ("ssh://-oProxyCommand=x/repo:d", "a host does not start with '-'"),
        ("git+ssh://-oProxyCommand=x@host/repo:d", "a host does not start with '-'"),
        ("u@-oProxyCommand=x:repo:d", "a host does not start with '-'"),
        ("own--er/repo", "'own--er' is not a GitHub owner"),
        ("o_wner/repo", "'o_wner' is not a GitHub owner"),
        ("owner/", "'' is not a GitHub repository name"),
        ("owner/..", "'..' is not a GitHub repository name"),
        ("owner/re$po", "'re$po' is not a GitHub repository name"),
        ("owner/repo:", "nothing after the last ':'"),
        ("owner/repo:-dist", "'-dist' is not a valid distribution name"),
        ("owner/repo:di$t", "'di$t' is not a valid distribution name"),
        ("ftp://host/repo", "not ftp://"),
        ("svn+ssh://host/repo", "not svn+ssh://"),
        ("https://host", "no repository path after the host"),
        ("https://host:8080", "no repository path after the host"),
        ("https://host/", "no repository path after the host"),
        ("https:///repo", "no host in the URL"),
        ("https://user:secret@host/repo", "the URL carries a password"),
        ("file://otherhost/srv/repo", "a file:// URL names a path on this machine"),
        ("file:///", "no repository path after file://"),
        ("@host:repo", "no host before ':'"),
        (":repo", "no host before ':'"),
        ("host:", "no repository path after host:"),
        # git reads NAME::ADDRESS as a remote helper, not as scp-like ssh with an empty path
        ("host::dist", "remote helper (git-remote-host)"),
        ("ext::sh:demo", "remote helper (git-remote-ext)"),
        ("fd::3:demo", "remote helper (git-remote-fd)"),
        ("git@host:", "no repository path after git@host:"),
        ("/srv/repo:not a name", "no spaces"),
        ("/srv/repo:bad$", "'bad$' is not a valid distribution name"),
    ],
)
def test_invalid_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, CWD)
    assert message in str(caught.value)


def test_a_relative_path_needs_the_clients_directory() -> None:
    with pytest.raises(SpecError, match="relative path needs the client's working directory"):
        parse_spec("./repo:d")


def test_git_urls() -> None:
    assert parse_spec("o/r:d").source.git_url == "https://github.com/o/r.git"
    assert parse_spec("git@h:o/r").source.git_url == "git@h:o/r"
    assert parse_spec("file:///srv/r").source.local_path == Path("/srv/r")
    assert parse_spec("/srv/r").source.local_path == Path("/srv/r")
    assert parse_spec("https://h/r").source.local_path is None


# -- reading DIST from a local repository --------------------------------------------------------


def _git(where: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(where), *args],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        },
    )


def make_repo_dir(where: Path, files: dict[str, str]) -> Path:
    where.mkdir(parents=True)
    _git(where, "init", "-q", "-b", "main")
    for name, text in files.items():
        (where / name).write_text(textwrap.dedent(text))
    _git(where, "add", "-A")
    _git(where, "commit", "-q", "-m", "init", "--allow-empty")
    return where


PYPROJECT = '[project]\nname = "Demo_Pkg"\nversion = "1"\n'


def test_dist_from_the_work_trees_pyproject(tmp_path: Path) -> None:
    repo = make_repo_dir(tmp_path / "r", {"pyproject.toml": PYPROJECT})
    assert read_dist_name(repo) == "Demo_Pkg"
    assert resolve_dist(parse_spec(str(repo)), str(repo)) == "Demo_Pkg"


def test_dist_from_head_in_a_bare_repository(tmp_path: Path) -> None:
    work = make_repo_dir(tmp_path / "w", {"pyproject.toml": PYPROJECT})
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    assert read_dist_name(bare) == "Demo_Pkg"
    assert resolve_dist(parse_spec(f"file://{bare}"), f"file://{bare}") == "Demo_Pkg"


@pytest.mark.parametrize(
    ("files", "name"),
    [
        ({"pyproject.toml": '[tool.poetry]\nname = "poetic"\n'}, "poetic"),
        ({"setup.cfg": "[metadata]\nname = from-cfg\n"}, "from-cfg"),
        (
            {
                "pyproject.toml": "[build-system]\nrequires = []\n",
                "setup.cfg": "[metadata]\nname = cfg\n",
            },
            "cfg",
        ),
    ],
)
def test_dist_from_other_declarations(tmp_path: Path, files: dict[str, str], name: str) -> None:
    assert read_dist_name(make_repo_dir(tmp_path / "r", files)) == name


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no pyproject.toml"),
        ({"pyproject.toml": '[project]\ndynamic = ["name"]\n'}, "pyproject.toml name no project"),
        ({"pyproject.toml": "not toml ["}, "pyproject.toml name no project"),
    ],
)
def test_no_dist_to_read_says_how_to_give_it(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    repo = make_repo_dir(tmp_path / "r", files)
    with pytest.raises(RepoError) as caught:
        read_dist_name(repo)
    assert message in str(caught.value)
    assert f"add it to the SPEC as {repo}:DIST" in str(caught.value)


def test_local_paths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="no such directory"):
        resolve_dist(parse_spec(str(tmp_path / "absent") + ":d"), "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(RepoError, match="not a directory"):
        resolve_dist(parse_spec(str(tmp_path / "file") + ":d"), "x")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepoError, match="not a git repository"):
        resolve_dist(parse_spec(str(tmp_path / "plain") + ":d"), "x")


def test_a_remote_repository_needs_its_dist() -> None:
    with pytest.raises(RepoError, match=r"give the distribution name .*: owner/repo:DIST"):
        resolve_dist(parse_spec("owner/repo"), "owner/repo")
    assert resolve_dist(parse_spec("owner/repo:d"), "owner/repo:d") == "d"


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"versions": "since"}, "--since needs a VERSION"),
        ({"versions": "since", "since": "one"}, "not a version"),
        ({"versions": "all", "since": "1.0"}, "goes with versions='since'"),
        ({"publish_to": ("bad name",)}, "not a target name"),
        ({"publish_to": ("a", "a")}, "names a target twice"),
        ({"local": False}, "published nowhere"),
    ],
)
def test_invalid_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(RepoError, match=message):
        make_repo(parse_spec("o/r:d"), "d", **options)  # type: ignore[arg-type]


def test_options_are_kept() -> None:
    repo = make_repo(
        parse_spec("o/r:d"),
        "d",
        versions="since",
        since="2.0",
        publish_to=("pypi",),
        local=False,
        now=5.0,
    )
    assert (repo.versions, repo.since, repo.publish_to, repo.local, repo.added) == (
        "since",
        "2.0",
        ("pypi",),
        False,
        5.0,
    )


# -- the registry --------------------------------------------------------------------------------


async def test_the_registry_persists_every_change(tmp_path: Path) -> None:
    repos = Repos.open(tmp_path)
    seen: list[tuple[str, bool]] = []
    repos.subscribe(lambda key, repo: seen.append((key, repo is not None)))
    await repos.add(make_repo(parse_spec("Owner/Repo:My_Dist"), "My_Dist", versions="all"))
    await repos.add(make_repo(parse_spec("/srv/x:other"), "other"))
    assert (tmp_path / REPOS_FILE).stat().st_mode & 0o777 == 0o600

    again = Repos.open(tmp_path)
    assert [r.dist for r in again.all()] == ["My_Dist", "other"]
    assert again.find("my-dist").versions == "all"
    assert again.find("owner/repo").dist == "My_Dist"  # GitHub names are case-insensitive
    assert again.find("Owner/Repo.git").dist == "My_Dist"
    assert again.find("/srv/x").dist == "other"

    updated = await again.update_state(
        again.find("other").key,
        lambda s: RepoState(last_check=1.0, newest_tag="v2", last_error="boom", log="/l"),
    )
    assert updated is not None
    state = Repos.open(tmp_path).find("other").state
    assert (state.last_check, state.newest_tag, state.last_error, state.log) == (
        1.0,
        "v2",
        "boom",
        "/l",
    )

    removed = await again.remove("my.dist")
    assert removed.dist == "My_Dist"
    assert [r.dist for r in Repos.open(tmp_path).all()] == ["other"]
    assert await again.update_state(removed.key, lambda s: s) is None
    assert seen == [("my-dist", True), ("other", True)]  # `again` has no listener


async def test_duplicates_and_unknown_names_are_refused(tmp_path: Path) -> None:
    repos = Repos.open(tmp_path)
    await repos.add(make_repo(parse_spec("o/r:dist"), "dist"))
    with pytest.raises(RepoError, match=r"dist is watched already, from o/r \(remove it first"):
        await repos.add(make_repo(parse_spec("o/other:DIST"), "DIST"))
    with pytest.raises(RepoError, match="o/r is watched already, for dist"):
        await repos.add(make_repo(parse_spec("o/r:another"), "another"))
    with pytest.raises(RepoError, match=r"no watched repository 'nope' \(watched: dist\)"):
        await repos.remove("nope")


def test_an_unreadable_registry_is_moved_aside_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / REPOS_FILE).write_text("{not json")
    repos = Repos.open(tmp_path)
    assert repos.all() == []
    aside = list(tmp_path.glob(f"{REPOS_FILE}.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_text() == "{not json"
    assert "unreadable" in caplog.text


def test_the_file_format(tmp_path: Path) -> None:
    """What the watcher and an admin read: versioned, one record per repository, state inside."""
    (tmp_path / REPOS_FILE).write_text(
        json.dumps(
            {
                "version": 1,
                "repos": [
                    {
                        "dist": "d",
                        "source": {"kind": "github", "location": "o/r"},
                        "added": 1.0,
                        "state": {"last_published": "1.0"},
                        "a-future-field": True,
                    }
                ],
            }
        )
    )
    repo = Repos.open(tmp_path).find("d")
    assert repo.state.last_published == "1.0"
    assert repo.local is True
