"""The mirror's pure parts, with tables: what goes where, what changed, in which order."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from insiders.config import load_settings
from insiders.errors import ConfigError
from insiders.mirror import claim, layout
from insiders.mirror.sync import _pages_first
from insiders.names import NormalizedName
from insiders.store import Project, RemovedFile, StoredFile


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


# -- claim: whether a target may be made to match the store ----------------------------------

ME, OTHER = "a" * 32, "b" * 32


def project(*files: StoredFile, revision: int = 1, removed: tuple[str, ...] = ()) -> Project:
    return Project(
        name="demo",
        files=files,
        revision=revision,
        removed=tuple(RemovedFile(filename=f, sha256="0" * 64) for f in removed),
    )


OTHER_BYTES = StoredFile(filename=A1.filename, version="1.0", size=10, sha256="2" * 64)


@pytest.mark.parametrize(
    ("store_id", "theirs", "ours", "lost", "newer", "other"),
    [
        # The target shows the store, or less of it: written from here, or before identities.
        (ME, project(A1), project(A1, A2), {}, (), None),
        ("", project(A1), project(A1, A2), {}, (), None),
        # The store removed a file the target still holds: recorded, so not a loss.
        (ME, project(A1, A2), project(A1, revision=2, removed=(A2.filename,)), {}, (), None),
        # The store does not have what the target holds: an emptied or older data directory.
        (ME, project(A1, A2), project(A1), {"demo": (A2.filename,)}, (), None),
        (ME, project(A1), None, {"demo": (A1.filename,)}, (), None),
        ("", project(A1), None, {"demo": (A1.filename,)}, (), None),
        (ME, project(OTHER_BYTES), project(A1), {"demo": (A1.filename,)}, (), None),
        # A newer record of the project (a status, a yank) than the store's.
        (ME, project(A1, revision=5), project(A1, revision=4), {}, ("demo",), None),
        # Another store's target: its revisions say nothing about this store's.
        (OTHER, project(A1, revision=9), project(A1, revision=1), {}, (), OTHER),
    ],
)
def test_claim_judges_what_a_target_holds(
    store_id: str,
    theirs: Project,
    ours: Project | None,
    lost: dict[str, tuple[str, ...]],
    newer: tuple[str, ...],
    other: str | None,
) -> None:
    root = layout.RootManifest(projects=("demo",), store=store_id)
    held = {NormalizedName("demo"): theirs}
    verdict = claim.judge(root, held, lambda name: ours, ME)
    assert (verdict.lost, verdict.newer, verdict.other_store) == (lost, newer, other)


def test_a_refusal_says_what_to_run() -> None:
    lost = claim.Verdict(lost={NormalizedName("demo"): ("demo-1.0.tar.gz",)}, other_store=OTHER)
    line = lost.refusal("web", "/srv/m", "")
    assert line is not None
    assert "\n" not in line
    assert "`insidersd --restore-from web`" in line
    assert "`insidersctl mirrors sync web --force`" in line
    assert lost.refusal("web", "/srv/m", "adopt") == line  # adopting never accepts a loss
    assert lost.refusal("web", "/srv/m", "force") is None
    theirs = claim.Verdict(other_store=OTHER)
    assert "--adopt" in (theirs.refusal("web", "/srv/m", "") or "")
    assert theirs.refusal("web", "/srv/m", "adopt") is None
    assert claim.Verdict().refusal("web", "/srv/m", "") is None


@pytest.mark.parametrize(
    ("key", "owned"),
    [
        ("simple/demo/index.html", True),
        ("simple/demo/insiders-project.json", True),
        ("pypi/demo/1.0/json", True),
        ("simple/demo/notes.txt", False),  # not a page of the layout
        (f"files/demo/{A1.filename}", True),  # the store holds it
        (f"quarantine/demo/{A1.filename}.metadata", True),
        (f"files/demo/{A2.filename}", True),  # removed, and recorded so
        ("files/demo/demo-9.0-py3-none-any.whl", False),  # nobody's record names it
    ],
)
def test_only_what_a_record_names_is_owned(key: str, owned: bool) -> None:
    assert layout.owned(key, project(A1, removed=(A2.filename,))) is owned


@pytest.mark.parametrize(
    ("status", "area", "documents"),
    [
        ("active", "files", True),
        ("deprecated", "files", True),
        ("quarantined", "quarantine", False),
    ],
)
def test_a_status_decides_where_files_go(status: str, area: str, documents: bool) -> None:
    demo = Project(name="demo", files=(A1,), status=status)  # type: ignore[arg-type]
    assert {k.split("/")[0] for k in layout.wanted_files(demo)} == {area}
    assert any(k.startswith("pypi/") for k in layout.page_keys(demo)) is documents


@pytest.mark.parametrize(
    ("info", "current"),
    [
        # Idle, nothing pending, last written 8 minutes ago: it shows the store now.
        (dict(state="idle", last_sync=-480.0), "now"),
        (dict(state="idle", last_sync=-1.0), "now"),
        (dict(state="idle", pending=2, last_sync=-480.0), "last 8 min ago"),
        (dict(state="syncing", last_sync=-480.0), "last 8 min ago"),
        (dict(state="failing", last_sync=-7200.0), "last 2 h ago"),
        (dict(state="refused", full_sync_pending=True, last_sync=None), "never"),
        (dict(state="comparing", full_sync_pending=True, last_sync=None), "never"),
    ],
)
def test_mirrors_list_says_when_a_target_is_current(
    info: dict[str, object], current: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21, item 8: "CURRENT 8 min ago" for a target that shows the store now."""
    from insidersctl import protocol
    from insidersctl.commands import MIRRORS

    now = 1_000_000.0
    if info["last_sync"] is not None:
        info = {**info, "last_sync": now + info["last_sync"]}  # type: ignore[operator]
    mirror = protocol.MirrorInfo(name="web", kind="directory", location="/m", **info)  # type: ignore[arg-type]
    MIRRORS.print([mirror], now)
    header, row = capsys.readouterr().out.splitlines()
    assert row[header.index("CURRENT") :].strip() == current


def test_a_manifest_is_the_mirrors_own_type_with_the_stores_bytes() -> None:
    """The manifest's types are the mirror's (insiders.mirror.manifest), copied by name from the
    store's records: every field set, the bytes are those the store's record encodes to (what
    mirrors written before those types hold), and they read back as the same record."""
    everything = StoredFile(
        filename="demo-1.0-py3-none-any.whl",
        version="1.0",
        size=10,
        sha256="a" * 64,
        md5="b" * 32,
        blake2b_256="c" * 64,
        upload_time=1.5,
        requires_python=">=3.9",
        yanked=True,
        yanked_reason="broken",
        metadata_sha256="d" * 64,
        uploaded_by="ci",
    )
    project = Project(
        name="Demo",
        files=(everything, A2),
        status="deprecated",
        status_reason="use other",
        revision=7,
        removed=(RemovedFile(filename="demo-0.1.tar.gz", sha256="e" * 64, removed_at=2.0),),
    )
    body = layout.encode_project(project)
    assert body == msgspec.json.encode(project)
    # A file's keys spelled out: the store and the manifest declare them once (store.FileFacts),
    # so a name changed there would change both bytes alike, and only this line would tell.
    keys = "filename version size sha256 md5 blake2b_256 upload_time requires_python yanked"
    keys += " yanked_reason metadata_sha256 uploaded_by"
    assert list(msgspec.json.decode(body)["files"][0]) == keys.split()
    assert layout.decode_project(body) == project
    assert layout.decode_project(msgspec.json.encode(Project(name="Old"))) == Project(name="Old")
