"""A release is one set of files, whichever PEP 440 spelling names it: yank, remove and the JSON
API all find a version's files through `Project.files_of`, so `1.0`, `1.0.0` and `01.0` agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from insiders.store import Project, StoredFile
from tests.support import Daemon, make_wheel, wheel_filename
from tests.test_ctl import ctl, ok


def stored(filename: str, version: str) -> StoredFile:
    return StoredFile(filename=filename, version=version, size=1, sha256="0" * 64)


PROJECT = Project(
    name="demo",
    files=(
        stored("demo-1.0.tar.gz", "1.0"),
        stored("demo-1.0-py3-none-any.whl", "1.0"),
        stored("demo-1.0.1-py3-none-any.whl", "1.0.1"),
        # Stored before versions were checked: matched by its own spelling only.
        stored("demo-banana-py3-none-any.whl", "banana"),
        stored("demo-cherry-py3-none-any.whl", "cherry"),
    ),
)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.0", ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"]),
        ("1.0.0", ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"]),
        ("01.0", ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"]),
        ("1.0.1", ["demo-1.0.1-py3-none-any.whl"]),
        ("1.1", []),
        ("banana", ["demo-banana-py3-none-any.whl"]),
        # Two versions that are no PEP 440 versions are not thereby the same version.
        ("kiwi", []),
        ("", []),
    ],
)
def test_files_of(version: str, expected: list[str]) -> None:
    assert [f.filename for f in PROJECT.files_of(version)] == expected


def upload(daemon: Daemon, tmp_path: Path, version: str) -> None:
    path = tmp_path / wheel_filename("demo", version)
    path.write_bytes(make_wheel("demo", version))
    assert daemon.upload(path).status_code == 200


def test_every_spelling_of_a_version_names_its_files(daemon: Daemon, tmp_path: Path) -> None:
    upload(daemon, tmp_path, "1.0")
    upload(daemon, tmp_path, "1.1")
    wheel = wheel_filename("demo", "1.0")

    assert ok(daemon, "yank", "demo", "1.0.0", "--reason", "broken") == (
        "yanked demo 1.0.0 (1 file)\n"
    )
    with daemon.client() as client:
        for spelling in ("1.0", "1.0.0", "01.0"):
            document = client.get(f"/pypi/demo/{spelling}/json").json()
            assert document["info"]["version"] == "1.0"
            assert [(f["filename"], f["yanked"]) for f in document["urls"]] == [(wheel, True)]
        assert client.get("/pypi/demo/json").json()["info"]["version"] == "1.1"
    assert "demo 01.0 was yanked already" in ok(
        daemon, "yank", "demo", "01.0", "--reason", "broken"
    )
    assert ok(daemon, "unyank", "demo", "1.0.0") == "unyanked demo 1.0.0 (1 file)\n"

    assert ok(daemon, "remove", "demo", "01.0", "--yes") == f"removed 1 file of demo:\n  {wheel}\n"
    with daemon.client() as client:
        assert client.get("/pypi/demo/1.0/json").status_code == 404
        assert client.get("/pypi/demo/1.1/json").status_code == 200
    missing = ctl(daemon, "yank", "demo", "1.0.0")
    assert missing.returncode == 1
    assert "demo has no version 1.0.0" in missing.stderr
