"""Table tests for the watcher's pure parts: tags, what to build, backoff."""

from __future__ import annotations

import ast
import gzip
import hashlib
import hmac
import io
import tarfile
from pathlib import Path

import msgspec
import pytest
import trio
from packaging.version import Version

from insiders.__main__ import leaves
from insiders.config import Settings, changed_keys
from insiders.errors import BuildError, CheckFailed, GitError, NotTagged
from insiders.errors import HookRefused as HookRefusal
from insiders.index.hooks import (
    Deliveries,
    claimed_signature,
    delivery_key,
    location_key,
    parse_event,
    signature_ok,
)
from insiders.repos.registry import RepoState, VersionRecord, make_repo
from insiders.repos.spec import parse_spec
from insiders.watcher.choice import is_new_tag, versions_to_build
from insiders.watcher.git import redact
from insiders.watcher.records import MAX_BACKOFF, backoff
from insiders.watcher.report import step_failures
from insiders.watcher.reproducible import normalize_sdist
from insiders.watcher.tags import parse_ls_remote, tag_version, to_build, version_tags
from tests.shape import PACKAGES


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("v1.0.0", "1.0.0"),
        ("1.0", "1.0"),
        ("V2", "2"),
        ("v1.0rc1", "1.0rc1"),
        ("1.0-post1", "1.0.post1"),
        ("2.0.0-beta-1", "2.0.0b1"),
        ("9.5.17-insiders-4.53.6", "9.5.17+insiders.4.53.6"),
        ("refs/tags/v3.1", "3.1"),
        ("latest", None),
        ("release-1.0", None),
        ("vx", None),
        ("v", None),
        ("1.0-", None),
    ],
)
def test_tag_version(tag: str, version: str | None) -> None:
    assert tag_version(tag) == (Version(version) if version else None)


def test_parse_ls_remote() -> None:
    output = "aaa\trefs/tags/v1.0\nbbb\trefs/tags/nightly\nccc\trefs/heads/main\n\n"
    assert parse_ls_remote(output) == {"v1.0": "aaa", "nightly": "bbb"}


def test_version_tags_first_sorted_tag_wins() -> None:
    assert version_tags(["v1.0", "1.0", "nightly", "v2.0"]) == {
        Version("1.0"): "1.0",
        Version("2.0"): "v2.0",
    }


V = [Version(v) for v in ("1.0", "1.1", "2.0rc1", "2.0")]


@pytest.mark.parametrize(
    ("published", "first", "select", "since", "expected"),
    [
        ([], True, "latest", None, ["2.0"]),
        ([], True, "all", None, ["1.0", "1.1", "2.0rc1", "2.0"]),
        ([], True, "latest", "1.1", ["1.1", "2.0rc1", "2.0"]),
        (["2.0"], True, "latest", None, []),
        (["1.0", "1.1"], False, "latest", None, ["2.0rc1", "2.0"]),
        (["2.0"], False, "latest", None, ["1.0", "1.1", "2.0rc1"]),
    ],
)
def test_to_build(
    published: list[str], first: bool, select: str, since: str | None, expected: list[str]
) -> None:
    versions = {v: str(v) for v in V}
    chosen = to_build(
        versions,
        published=[Version(p) for p in published],
        first_check=first,
        select=select,
        since=Version(since) if since else None,
    )
    assert chosen == [Version(e) for e in expected]


FIRST = RepoState()  # never listed
LATER = RepoState(skipped=("1.0", "1.1", "2.0rc1"))  # listed once: 2.0 built, the rest skipped
LATER_2_0_FAILED = RepoState(
    skipped=LATER.skipped, versions={"2.0": VersionRecord(status="failed", retry_at=2000.0)}
)
LATER_2_0_REMOVED = RepoState(
    skipped=LATER.skipped, versions={"2.0.0": VersionRecord(status="removed")}
)


@pytest.mark.parametrize(
    ("state", "local", "hosted", "options", "expected", "skipped"),
    [
        (FIRST, True, [], {}, ["2.0"], ("1.0", "1.1", "2.0rc1")),
        (FIRST, True, ["2.0"], {}, [], ("1.0", "1.1", "2.0rc1")),
        (LATER, True, ["2.0"], {}, [], None),
        (LATER, True, [], {}, ["2.0"], None),  # its files were removed by hand
        (LATER, True, ["2.0"], {"force": True}, ["2.0"], None),
        (LATER_2_0_REMOVED, True, [], {}, [], None),
        (LATER_2_0_REMOVED, True, [], {"force": True}, [], None),
        (LATER_2_0_REMOVED, True, [], {"only": ["2.0", "1.0"]}, ["2.0", "1.0"], None),
        (LATER_2_0_FAILED, True, [], {}, [], None),  # its retry time has not come
        (LATER_2_0_FAILED, True, [], {"explicit": True}, ["2.0"], None),
        (RepoState(skipped=(), last_published="1.1"), False, [], {}, ["2.0", "2.0rc1"], None),
    ],
)
def test_versions_to_build(
    state: RepoState,
    local: bool,
    hosted: list[str],
    options: dict[str, object],
    expected: list[str],
    skipped: tuple[str, ...] | None,
) -> None:
    elsewhere = () if local else ("other-index",)
    made = make_repo(parse_spec("o/r:demo"), "demo", local=local, publish_to=elsewhere)
    repo = msgspec.structs.replace(made, state=state)
    versions = {v: f"v{v}" for v in V}
    settings: dict[str, object] = {"force": False, "only": (), "explicit": False} | options
    wanted, newly_skipped = versions_to_build(
        repo,
        versions,
        hosted=hosted,
        now=1000.0,
        **settings,  # type: ignore[arg-type]
    )
    assert (wanted, newly_skipped) == ([Version(e) for e in expected], skipped)


def test_a_version_asked_for_needs_its_tag() -> None:
    repo = make_repo(parse_spec("o/r:demo"), "demo")
    message = r"--version 3.0: no tag names this version \(2.0, 2.0rc1, 1.1, 1.0\)"
    with pytest.raises(NotTagged, match=message):
        versions_to_build(
            repo, {v: str(v) for v in V}, force=False, only=["3.0"], explicit=True, hosted=(), now=0
        )


def test_a_step_s_expected_errors_become_the_check_s_failure() -> None:
    with pytest.raises(CheckFailed) as raised, step_failures(Path("1.0.log")):
        raise BuildError("python -m build failed (exit status 1)")
    assert str(raised.value) == "python -m build failed (exit status 1)"
    assert raised.value.log_path == Path("1.0.log")
    with pytest.raises(CheckFailed, match=r"^git fetch failed$"), step_failures():
        raise GitError("git fetch failed")
    with (
        pytest.raises(CheckFailed, match=r"^fetching took longer"),
        step_failures(too_slow="fetching took longer than 5 s"),
    ):
        raise trio.TooSlowError
    # What a step does not expect goes on to the repository's boundary, as itself.
    with pytest.raises(trio.TooSlowError), step_failures():
        raise trio.TooSlowError
    with pytest.raises(KeyError), step_failures(too_slow="slow"):
        raise KeyError("a bug")


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 600.0), (2, 1200.0), (3, 2400.0), (10, MAX_BACKOFF), (50, MAX_BACKOFF)],
)
def test_backoff(failures: int, expected: float) -> None:
    assert backoff(failures, 600.0) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "fatal: https://user:s3cret@host/repo.git not found",
            "fatal: https://***@host/repo.git not found",
        ),
        ("token ghp_abc in a message", "token *** in a message"),
        ("nothing secret", "nothing secret"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text, "ghp_abc") == expected


# -- push triggers (insiders.index.hooks) -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://github.com/Owner/Repo.git", "github.com/owner/repo"),
        ("git@github.com:Owner/Repo.git", "github.com/owner/repo"),
        ("ssh://git@gitlab.example:2222/team/sub/lib.git", "gitlab.example/team/sub/lib"),
        ("https://user@gitea.example/org/tool/", "gitea.example/org/tool"),
        ("/srv/git/lib.git", "file:/srv/git/lib"),
        ("file:///srv/git/Lib.git/", "file:/srv/git/Lib"),
        ("https://host.example/", ""),
    ],
)
def test_location_key(url: str, key: str) -> None:
    assert location_key(url) == key


def test_signatures() -> None:
    body = b'{"ref": "refs/tags/v1.0"}'
    good = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature_ok("github", {"x-hub-signature-256": good}, body, "k")
    assert not signature_ok("github", {"x-hub-signature-256": good}, body + b" ", "k")
    assert not signature_ok("github", {}, body, "k")
    assert not signature_ok("github", {"x-hub-signature-256": good.upper()}, body, "k")
    assert signature_ok("gitea", {"x-gitea-signature": good.removeprefix("sha256=")}, body, "k")
    assert signature_ok("gitlab", {"x-gitlab-token": "k"}, body, "k")
    assert not signature_ok("gitlab", {"x-gitlab-token": "K"}, body, "k")
    # GitLab's token is the secret itself; a GitHub signature header is not accepted for it.
    assert not signature_ok("gitlab", {"x-hub-signature-256": good}, body, "k")


def test_events() -> None:
    ping = parse_event("github", {"x-github-event": "ping"}, {"zen": "z"})
    assert ping.kind == "ping"
    branch = {"ref": "refs/heads/main", "repository": {"full_name": "o/r"}}
    assert parse_event("github", {"x-github-event": "push"}, branch).kind == "other"
    tag = {"ref": "refs/tags/v1", "repository": {"full_name": "O/R", "clone_url": "https://h/O/R"}}
    event = parse_event("github", {"x-github-event": "push"}, tag)
    assert event.kind == "tag"
    assert event.locations == {"github:o/r", "h/o/r"}
    create = {"ref": "v1", "ref_type": "tag", "repository": {"full_name": "o/r"}}
    assert parse_event("gitea", {"x-gitea-event": "create"}, create).kind == "tag"
    gitlab = {"object_kind": "tag_push", "project": {"git_http_url": "https://gl/t/l.git"}}
    assert parse_event("gitlab", {}, gitlab).locations == {"gl/t/l"}
    with pytest.raises(HookRefusal):
        parse_event("github", {}, [1, 2])
    # The tag pushed; a deleted tag brings nothing to build.
    assert event.tag == "v1"
    assert parse_event("gitea", {"x-gitea-event": "create"}, create).tag == "v1"
    deleted = {**tag, "deleted": True, "after": "0" * 40}
    assert parse_event("github", {"x-github-event": "push"}, deleted).kind == "other"
    gone = {**gitlab, "ref": "refs/tags/v2", "after": "0" * 40}
    assert parse_event("gitlab", {}, gone).kind == "other"
    assert parse_event("gitlab", {}, {**gone, "after": "b" * 40}).tag == "v2"


def test_a_signature_claim_is_judged_before_the_body_is_read() -> None:
    hex64 = "ab" * 32
    assert claimed_signature("github", {"x-hub-signature-256": f"sha256={hex64}"}) == hex64
    assert claimed_signature("gitea", {"x-gitea-signature": hex64}) == hex64
    for headers in (
        {},
        {"x-hub-signature-256": hex64},  # no sha256= prefix
        {"x-hub-signature-256": "sha256=" + "ab" * 31},
        {"x-hub-signature-256": "sha1=" + hex64},
        {"x-gitea-signature": hex64},  # Gitea's own header, sent to /hooks/github
    ):
        assert claimed_signature("github", headers) is None, headers


def test_deliveries_are_remembered_for_a_day_and_bounded() -> None:
    deliveries = Deliveries(limit=3)
    assert not deliveries.seen("github:a")
    for key in ("github:a", "github:b", "github:c"):
        deliveries.remember(key)
    assert deliveries.seen("github:a")
    deliveries.remember("github:d")  # the oldest goes
    assert not deliveries.seen("github:a")
    assert deliveries.seen("github:d")
    assert Deliveries(keep=0.0).seen("github:a") is False
    forgetting = Deliveries(keep=-1.0)  # everything is older than that at once
    forgetting.remember("github:x")
    assert not forgetting.seen("github:x")
    assert delivery_key("gitlab", {"x-gitlab-event-uuid": "u-1"}) == "gitlab:u-1"
    assert delivery_key("github", {"x-github-delivery": "x" * 500}) == f"github:{'x' * 128}"
    assert delivery_key("gitea", {}) is None


@pytest.mark.parametrize(
    ("tag", "state", "hosted", "new"),
    [
        ("v3.0", RepoState(), [], True),  # never listed: every version tag is new
        ("v3.0", RepoState(versions={"1.0": VersionRecord(status="published")}), [], True),
        ("v1.0", RepoState(versions={"1.0": VersionRecord(status="failed")}), [], False),
        ("1.0.0", RepoState(versions={"1.0": VersionRecord(status="failed")}), [], False),
        ("v1.0", RepoState(versions={"1.0": VersionRecord(status="removed")}), [], False),
        ("v1.0", RepoState(skipped=("1.0",)), [], False),
        ("v1.0", RepoState(newest_tag="v1.0"), [], False),
        ("v1.0", RepoState(), ["1.0"], False),  # in the store already
        ("release-candidate", RepoState(), [], False),  # not a version tag: nothing to build
    ],
)
def test_a_push_is_worth_a_check_only_for_a_new_version(
    tag: str, state: RepoState, hosted: list[str], new: bool
) -> None:
    repo = msgspec.structs.replace(make_repo(parse_spec("o/r:demo"), "demo"), state=state)
    assert is_new_tag(repo, tag, hosted) is new


# -- reproducible sdists ------------------------------------------------------------------------


def _tar_gz(tmp_path: Path, name: str, mtime: int, gzip_mtime: int) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member_name, data in (("p-1.0/PKG-INFO", b"Name: p\n"), ("p-1.0/a.py", b"x = 1\n")):
            info = tarfile.TarInfo(member_name)
            info.size, info.mtime = len(data), mtime
            info.pax_headers = {"mtime": f"{mtime}.123"}
            archive.addfile(info, io.BytesIO(data))
    path = tmp_path / name / "p-1.0.tar.gz"
    path.parent.mkdir()
    with path.open("wb") as file, gzip.GzipFile(fileobj=file, mode="wb", mtime=gzip_mtime) as gz:
        gz.write(raw.getvalue())
    return path


def test_normalize_sdist_gives_the_same_bytes_for_other_build_times(tmp_path: Path) -> None:
    epoch = 1_700_000_000
    first = _tar_gz(tmp_path, "a", epoch + 100, epoch + 100)
    second = _tar_gz(tmp_path, "b", epoch + 900, epoch + 950)
    assert first.read_bytes() != second.read_bytes()
    assert normalize_sdist(first, epoch)
    assert normalize_sdist(second, epoch)
    assert first.read_bytes() == second.read_bytes()
    assert not normalize_sdist(first, epoch)  # already clamped: left as it is
    with tarfile.open(first) as archive:
        assert {m.mtime for m in archive.getmembers()} == {epoch}
        assert archive.extractfile("p-1.0/a.py").read() == b"x = 1\n"  # type: ignore[union-attr]


# -- the daemon's own failures, and reload -----------------------------------------------------


def test_leaves_names_the_innermost_exceptions() -> None:
    inner = ValueError("the real cause")
    group = ExceptionGroup("outer", [ExceptionGroup("nursery", [inner]), KeyError("k")])
    assert leaves(group) == [inner, group.exceptions[1]]
    assert leaves(inner) == [inner]


def test_changed_keys_are_named_as_the_config_spells_them() -> None:
    running = Settings()
    new = msgspec.toml.decode(
        b'[server]\nport = 1\nmax-upload-size = 5\n[paths]\ndata-dir = "/x"\n', type=Settings
    )
    assert changed_keys("server", running.server, new.server) == [
        "server.port",
        "server.max-upload-size",
    ]
    assert changed_keys("paths", running.paths, new.paths) == ["paths.data-dir"]
    assert changed_keys("server", running.server, Settings().server) == []


def test_the_watcher_speaks_its_own_types() -> None:
    """The README's invariant: no module of the watcher imports insidersctl (its protocol is
    insiders.control.commands' to word), so the protocol can change without the watcher knowing."""
    for path in sorted((PACKAGES["insiders"] / "watcher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.partition(".")[0] == "insidersctl" for name in names), path.name
