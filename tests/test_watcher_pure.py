"""Table tests for the watcher's pure parts: tags, what to build, backoff."""

from __future__ import annotations

import pytest
from packaging.version import Version

from insiders.watcher.git import redact
from insiders.watcher.tags import parse_ls_remote, tag_version, to_build, version_tags
from insiders.watcher.watcher import MAX_BACKOFF, backoff


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
