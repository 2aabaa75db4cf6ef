"""The mirror's pure parts, with tables: what goes where, what changed, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from insiders.config import load_settings
from insiders.errors import ConfigError
from insiders.mirror import layout
from insiders.mirror.sync import _pages_first
from insiders.store import Project, StoredFile


def stored(filename: str, version: str, *, yanked: bool = False) -> StoredFile:
    return StoredFile(
        filename=filename,
        version=version,
        size=10,
        sha256="0" * 64,
        yanked=yanked,
        metadata_sha256="1" * 64 if filename.endswith(".whl") else None,
    )


A1 = stored("demo-1.0-py3-none-any.whl", "1.0")
A1_SDIST = stored("demo-1.0.tar.gz", "1.0")
A2 = stored("demo-2.0-py3-none-any.whl", "2.0")
A2_YANKED = stored("demo-2.0-py3-none-any.whl", "2.0", yanked=True)


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        (None, (A1,), None),  # nothing synced yet: every version
        ((A1,), (A1,), set()),
        ((A1,), (A1, A2), {"2.0"}),  # an upload: its version only
        ((A1,), (A1, A1_SDIST), {"1.0"}),  # a second file of a version
        ((A1, A2), (A1, A2_YANKED), {"2.0"}),  # a yank
        ((A1, A2), (A2,), set()),  # a removal: the version's document is deleted, not written
    ],
)
def test_changed_versions(
    before: tuple[StoredFile, ...] | None, after: tuple[StoredFile, ...], changed: set[str] | None
) -> None:
    old = Project(name="Demo", files=before) if before is not None else None
    assert layout.changed_versions(old, Project(name="Demo", files=after)) == changed


@pytest.mark.parametrize(
    ("key", "project"),
    [
        ("files/demo/demo-1.0.tar.gz", "demo"),
        ("pypi/demo/1.0/json", "demo"),
        ("pypi/demo/json", "demo"),
        ("simple/demo/index.html", "demo"),
        ("simple/index.html", None),
        ("simple/insiders-mirror.json", None),
        ("elsewhere/demo/x", None),
    ],
)
def test_project_of(key: str, project: str | None) -> None:
    assert layout.project_of(key) == project


def test_removal_order_is_pages_then_documents_then_files() -> None:
    keys = [
        "files/demo/demo-1.0.tar.gz",
        "pypi/demo/json",
        "simple/demo/index.html",
        "files/demo/demo-1.0-py3-none-any.whl",
        "simple/demo/insiders-project.json",
    ]
    assert _pages_first(keys) == [
        "simple/demo/index.html",
        "simple/demo/insiders-project.json",
        "pypi/demo/json",
        "files/demo/demo-1.0-py3-none-any.whl",
        "files/demo/demo-1.0.tar.gz",
    ]


def test_pages_are_written_under_the_keys_page_keys_names_manifest_last() -> None:
    project = Project(name="Demo", files=(A1, A1_SDIST, A2))
    pages = layout.project_pages(project, lambda f: b"Metadata-Version: 2.1\n", "/")
    assert {p.key for p in pages} == layout.page_keys(project)
    assert pages[-1].key == "simple/demo/insiders-project.json"
    assert layout.decode_project(pages[-1].page.body) == project
    only = layout.project_pages(project, lambda f: None, "/", {"2.0"})
    assert {p.key for p in only} == layout.page_keys(project) - {"pypi/demo/1.0/json"}
    assert set(layout.wanted_files(project)) == {
        "files/demo/demo-1.0-py3-none-any.whl",
        "files/demo/demo-1.0-py3-none-any.whl.metadata",
        "files/demo/demo-1.0.tar.gz",
        "files/demo/demo-2.0-py3-none-any.whl",
        "files/demo/demo-2.0-py3-none-any.whl.metadata",
    }


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('endpoint = "http://127.0.0.1:1"', "either `directory` or `bucket`"),
        ('directory = "/srv/m"\nbucket = "b"', "either `directory` or `bucket`"),
        ('directory = "/srv/m"\nurl = "https://x.example"', "`url` ends with /"),
        ('directory = "/srv/m"\nsecret = "inline"', "unknown field `secret`"),
    ],
)
def test_mirror_settings_are_checked(tmp_path: Path, section: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[mirrors.web]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, required=True)
