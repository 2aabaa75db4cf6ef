"""A directory target trusts nothing it reads and owns only what it wrote (issue 21, items 6 and
7), through real insidersd processes:

- a restore takes only names the upload rules allow: a manifest naming `../../tokens.json`
  writes nothing outside the store;
- a symbolic link planted in the tree never makes the daemon write or delete where it points;
- a directory that holds something and no marker of the daemon's is not written to;
- a file no manifest of the daemon's names is never deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.fronts import ctl, wait_for
from tests.mirrors import NO_UPSTREAM, Launch, mirrored_home, ok, synced, upload
from tests.support import wheel_filename


def test_a_restore_takes_only_names_an_upload_could_have(tmp_path: Path, launch: Launch) -> None:
    daemon, tree = synced(tmp_path, launch, ("good", "1.0"), ("evil", "1.0"))
    home = daemon.home

    # Someone who can write the target: a file beside the tree, and a manifest naming it by a
    # path that climbs out of the store's project directory onto the daemon's token file.
    planted = b'{"tokens": [{"name": "attacker"}]}'
    (tree / "tokens.json").write_bytes(planted)
    manifest_path = tree / "simple" / "evil" / "insiders-project.json"
    manifest = json.loads(manifest_path.read_bytes())
    manifest["files"].append(
        {
            "filename": "../../tokens.json",
            "version": "1.0",
            "size": len(planted),
            "sha256": hashlib.sha256(planted).hexdigest(),
        }
    )
    manifest_path.write_text(json.dumps(manifest))
    # verify names it, and reads nothing through it.
    verified = ctl(home, "mirrors", "verify", "web")
    assert verified.returncode == 1
    assert "'../../tokens.json'" in verified.stdout
    daemon.stop()

    shutil.rmtree(daemon.data_dir)
    restored = launch(home, [*NO_UPSTREAM, "--restore-from", "web"])
    tokens = daemon.data_dir / "tokens.json"
    assert not tokens.exists() or tokens.read_bytes() != planted
    log = restored.log()
    assert "skipped" in log
    assert "'../../tokens.json'" in log
    # The rest came back.
    assert (daemon.data_dir / "packages" / "evil" / wheel_filename("evil", "1.0")).exists()
    assert (daemon.data_dir / "packages" / "good" / wheel_filename("good", "1.0")).exists()


def test_a_planted_link_never_leads_the_daemon_out(tmp_path: Path, launch: Launch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "index.html").write_text("precious")
    (elsewhere / "index.json").write_text("precious too")
    daemon, tree = synced(tmp_path, launch, ("victim", "1.0"), ("victim", "2.0"))
    home = daemon.home

    # The project's page directory becomes a link to somewhere else.
    shutil.rmtree(tree / "simple" / "victim")
    (tree / "simple" / "victim").symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}

    # A removal (pages rewritten, a version's documents deleted) and a full comparison.
    ok(home, "remove", "victim", "1.0", "--yes")
    refused = ctl(home, "mirrors", "sync", "web")
    assert refused.returncode == 1
    assert "symbolic link" in refused.stderr
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before

    # A link in place of a file is replaced, not written through.
    (tree / "simple" / "victim").unlink()
    target = elsewhere / "wheel"
    target.write_text("precious")
    wheel = tree / "files" / "victim" / wheel_filename("victim", "2.0")
    wheel.unlink()
    wheel.symlink_to(target)
    ok(home, "mirrors", "sync", "web")
    assert target.read_text() == "precious"
    assert not wheel.is_symlink()
    assert (tree / "simple" / "victim" / "index.html").is_file()
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == {**before, "wheel": b"precious"}


def test_a_directory_that_is_not_a_mirror_is_left_alone(tmp_path: Path, launch: Launch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("someone's web site")
    home = mirrored_home(tmp_path / "daemon", site)
    daemon = launch(home, NO_UPSTREAM)
    upload(daemon, tmp_path, "pkg", "1.0")
    refused = ctl(home, "mirrors", "sync", "web")
    assert refused.returncode == 1
    assert ".insiders-mirror" in refused.stderr
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]
    listed = json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"][0]
    assert listed["state"] == "refused"
    table = ctl(home, "mirrors", "list")
    assert "refused" in table.stdout
    assert "full comparison pending" not in table.stdout  # it waits for a person
    assert ".insiders-mirror" in table.stderr  # the reason, below the table

    # An empty directory is taken, and marked.
    empty = tmp_path / "empty"
    empty.mkdir()
    daemon.stop()
    mirrored_home(home, empty)
    launch(home, NO_UPSTREAM)
    ok(home, "mirrors", "sync", "web")
    assert (empty / ".insiders-mirror").is_file()
    assert (empty / "files" / "pkg" / wheel_filename("pkg", "1.0")).is_file()


def test_only_what_the_daemon_wrote_is_deleted(tmp_path: Path, launch: Launch) -> None:
    daemon, tree = synced(tmp_path, launch, ("mine", "1.0"), ("mine", "2.0"))
    home = daemon.home
    strays = [
        tree / "files" / "mine" / wheel_filename("mine", "9.9"),
        tree / "files" / "theirs" / wheel_filename("theirs", "1.0"),
        tree / "notes.txt",
    ]
    for stray in strays:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_text("not the daemon's")
    ok(home, "remove", "mine", "1.0", "--yes")
    ok(home, "mirrors", "sync", "web")
    assert not (tree / "files" / "mine" / wheel_filename("mine", "1.0")).exists()
    assert (tree / "files" / "mine" / wheel_filename("mine", "2.0")).exists()
    for stray in strays:
        assert stray.read_text() == "not the daemon's"


def current(home: Path) -> bool:
    """The start's full comparison is done: the target was current once, nothing pending."""
    (mirror,) = json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"]
    return bool(mirror["state"] == "idle" and mirror["last_sync"] and not mirror["pending"])


def _flip(path: Path) -> None:
    """Other bytes, the same size: only a comparison by content sees it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_files_are_compared_by_content(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, item 5: verify reports each file whose bytes differ, sync and a start rewrite
    them, a restore skips a corrupt one with a report."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    first = upload(daemon, tmp_path, "solid", "1.0")
    second = upload(daemon, tmp_path, "solid", "2.0")
    ok(home, "mirrors", "sync", "web")
    assert "all 4 files match" in ctl(home, "mirrors", "verify", "web").stderr

    wheel = tree / "files" / "solid" / first.name
    metadata = tree / "files" / "solid" / f"{second.name}.metadata"
    _flip(wheel)
    _flip(metadata)
    verified = ctl(home, "mirrors", "verify", "web")
    assert verified.returncode == 1
    differ = sorted(line.split(":")[0] for line in verified.stdout.splitlines())
    assert differ == [f"files/solid/{first.name}", f"files/solid/{second.name}.metadata"]
    synced = ok(home, "mirrors", "sync", "web")
    assert "2 of them held other bytes" in synced
    assert wheel.read_bytes() == first.read_bytes()
    assert ctl(home, "mirrors", "verify", "web").returncode == 0

    # At a start too.
    daemon.stop()
    _flip(wheel)
    daemon = launch(home, NO_UPSTREAM)
    assert wait_for(lambda: current(home)), ctl(home, "mirrors", "list")
    assert wheel.read_bytes() == first.read_bytes()
    assert ctl(home, "mirrors", "verify", "web").returncode == 0
    daemon.stop()

    # A restore skips what does not match, says so, and restores the rest.
    _flip(wheel)
    shutil.rmtree(daemon.data_dir)
    restored = launch(home, [*NO_UPSTREAM, "--restore-from", "web"])
    log = restored.log()
    assert f"files/solid/{first.name}: does not match its manifest" in log
    assert "restored 1 projects (1 files) from mirror web; 1 skipped" in log
    shown = json.loads(ok(home, "--json", "projects", "show", "solid"))
    assert [f["filename"] for f in shown["files"]] == [second.name]
