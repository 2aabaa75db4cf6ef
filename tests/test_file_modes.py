"""Everything insidersd writes under its data directory is its own: files 0600, directories 0700,
whatever the umask it was started with (the system unit's is 0077, a login shell's 022).

Walked over a real daemon's directories after an upload, a build and a restore.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, git_project, make_wheel, tag_release, wheel_filename
from tests.test_watcher import ctl, wheelhouse

__all__ = ["wheelhouse"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The daemons of this test start with umask 022, as from a login shell."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def loose(root: Path, *, exact: bool = True) -> list[str]:
    """Entries under `root` (itself included) that others may read: with `exact`, files that are
    not 0600 and directories not 0700; otherwise any group or other permission at all."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        perms = stat.S_IMODE(mode)
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if (perms != wanted) if exact else (perms & 0o077):
            found.append(f"{oct(perms)} {path.relative_to(root.parent)}")
    return found


def test_the_data_directory_is_private(
    tmp_path: Path, wheelhouse: Daemon, open_umask: None
) -> None:
    home = tmp_path / "d"
    tree = tmp_path / "mirror"
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[watcher]\nenabled = false\n\n[mirrors.copy]\ndirectory = "{tree}"\n')
    daemon = Daemon(home, ["--upstream", wheelhouse.index]).start()
    try:
        # An upload: the file, its .metadata, the project's manifest.
        wheel = tmp_path / wheel_filename("uploaded", "1.0")
        wheel.write_bytes(make_wheel("uploaded", "1.0"))
        assert daemon.upload(wheel).status_code == 200
        # A build: its log, the registry, the built files.
        repo = git_project(tmp_path / "src", "built")
        tag_release(repo, "1.0.0")
        ctl(daemon, "repos", "add", f"{repo}:built")
        ctl(daemon, "update", "--wait")
        assert list((daemon.data_dir / "logs").rglob("*.log")), "no build log"
        ctl(daemon, "mirrors", "sync", "copy")
    finally:
        daemon.stop()
    assert (daemon.data_dir / "packages" / "built" / ".project.json").exists()
    assert loose(daemon.data_dir) == []
    assert loose(home / "cache" / "insiders", exact=False) == []

    # A restore into an empty data directory.
    shutil.rmtree(daemon.data_dir)
    restored = Daemon(home, ["--upstream-mode", "none", "--restore-from", "copy"]).start()
    try:
        assert "restored 2 projects" in restored.log()
    finally:
        restored.stop()
    assert (restored.data_dir / "packages" / "uploaded" / ".project.json").exists()
    assert loose(restored.data_dir) == []


def test_an_older_data_directory_is_made_private(tmp_path: Path, open_umask: None) -> None:
    """Files an earlier version wrote 0644 (and directories 0755) are restricted at start."""
    home = tmp_path / "d"
    first = Daemon(home, ["--upstream-mode", "none"]).start()
    wheel = tmp_path / wheel_filename("older", "1.0")
    wheel.write_bytes(make_wheel("older", "1.0"))
    assert first.upload(wheel).status_code == 200
    first.stop()
    for path in [first.data_dir, *first.data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    again = Daemon(home, ["--upstream-mode", "none"]).start()
    again.stop()
    assert loose(again.data_dir) == []
