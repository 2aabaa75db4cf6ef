"""A mirror is a backup you can bet on (issue 21), with directory targets and the shipped nginx
front, through real insidersd processes:

- a daemon whose store lost data (an empty data directory, an interrupted restore) never makes a
  target match it: the target is refused with one line that says what to run;
- every PEP 792 status reaches the target (a quarantined project's files and documents are not
  served by the front, and come back when it is lifted);
- a restore brings back statuses, yank reasons and removals exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import msgspec

from insiders.fsutil import atomic_write
from insiders.store import MANIFEST, Project, StoredFile, sort_files
from tests.fronts import Nginx, ctl, free_port, front_site, get, wait_for, write_config
from tests.mirrors import (
    NO_UPSTREAM,
    PIP_ACCEPT,
    Launch,
    check_quarantine_at_front,
    mirrored_home,
    ok,
    upload,
)
from tests.support import make_wheel, pip_install, wheel_filename


def wheels(tree: Path) -> set[str]:
    return {p.name for p in (tree / "files").rglob("*.whl")} if (tree / "files").exists() else set()


def lines_with(log: str, *words: str) -> list[str]:
    return [line for line in log.splitlines() if all(w in line for w in words)]


def projects(home: Path) -> list[dict[str, object]]:
    answer = json.loads(ok(home, "--json", "projects", "list"))["projects"]
    assert isinstance(answer, list)
    return answer


def show(home: Path, project: str) -> dict[str, object]:
    """`projects show` as JSON, without the daemon's clock."""
    answer = json.loads(ok(home, "--json", "projects", "show", project))
    answer.pop("now")
    assert isinstance(answer, dict)
    return answer


def test_an_empty_data_directory_never_empties_the_mirror(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, item 1: a copy of a full mirror, a daemon on an empty data directory."""
    tree = tmp_path / "mirror"
    first = launch(mirrored_home(tmp_path / "first", tree), NO_UPSTREAM)
    for name, version in [("one", "1.0"), ("one", "2.0"), ("two", "0.1")]:
        upload(first, tmp_path, name, version)
    ok(first.home, "mirrors", "sync", "web")
    first.stop()
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, symlinks=True)
    tree = copy
    held = wheels(tree)
    assert len(held) == 3

    # A copy of the target, and a data directory that lost everything.
    home = mirrored_home(tmp_path / "second", tree)
    second = launch(home, NO_UPSTREAM)
    try:
        # A full comparison is what wiped it: it now refuses, and says what to run.
        refused = ctl(home, "mirrors", "sync", "web")
        assert wheels(tree) == held
        assert refused.returncode == 1, refused.stdout
        assert "insidersd --restore-from web" in refused.stderr
        assert "mirrors sync web --force" in refused.stderr
        said = lines_with(second.log(), "mirror web", "--restore-from web")
        assert len(said) == 1, second.log()
        listed = json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"][0]
        assert listed["state"] == "refused"
    finally:
        second.stop()

    # So a restore into that data directory still brings everything back.
    restored = launch(home, [*NO_UPSTREAM, "--restore-from", "web"])
    try:
        assert "restored 2 projects (3 files) from mirror web" in restored.log()
        # The restored store is the one the target was written from: it is current again.
        synced = ok(home, "mirrors", "sync", "web")
        assert "0 removed" in synced
        assert wheels(tree) == held
    finally:
        restored.stop()


def test_force_accepts_the_loss_and_adopt_claims_a_target(tmp_path: Path, launch: Launch) -> None:
    """The explicit ways out: --adopt takes a target written by another store when the store
    holds all it names; --force makes it match the store and loses what only it held."""
    tree = tmp_path / "mirror"
    first = launch(mirrored_home(tmp_path / "first", tree), NO_UPSTREAM)
    upload(first, tmp_path, "kept", "1.0")
    ok(first.home, "mirrors", "sync", "web")
    first.stop()

    # A second store with the same file, and one of its own: the target is another store's.
    home = mirrored_home(tmp_path / "second", tree)
    second = launch(home, NO_UPSTREAM)
    try:
        upload(second, tmp_path, "kept", "1.0")
        upload(second, tmp_path, "extra", "1.0")
        refused = ctl(home, "mirrors", "sync", "web")
        assert refused.returncode == 1
        assert "another store" in refused.stderr
        adopted = ctl(home, "mirrors", "sync", "web", "--adopt")
        assert adopted.returncode == 0, adopted.stderr
        assert wheels(tree) == {wheel_filename("kept", "1.0"), wheel_filename("extra", "1.0")}
        assert ok(home, "mirrors", "sync", "web")  # adopted: no flag needed any more
    finally:
        second.stop()

    # An empty store and that target: --adopt refuses the loss, --force takes it.
    home = mirrored_home(tmp_path / "third", tree)
    third = launch(home, NO_UPSTREAM)
    try:
        refused = ctl(home, "mirrors", "sync", "web", "--adopt")
        assert refused.returncode == 1
        assert len(wheels(tree)) == 2
        # An upload meanwhile is not mirrored either: the target waits for a decision.
        upload(third, tmp_path, "late", "1.0")
        assert ctl(home, "mirrors", "sync", "web").returncode == 1
        assert not (tree / "simple" / "late").exists()
        forced = ctl(home, "mirrors", "sync", "web", "--force")
        assert forced.returncode == 0, forced.stderr
        assert wheels(tree) == {wheel_filename("late", "1.0")}
        root = json.loads((tree / "simple" / "index.json").read_bytes())
        assert root["projects"] == [{"name": "late"}]
    finally:
        third.stop()


def test_a_target_from_before_identities(tmp_path: Path, launch: Launch) -> None:
    """Today's targets carry no store identity: one whose manifests the store holds is adopted
    at the first start; one that names more than the store is refused."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    upload(daemon, tmp_path, "old", "1.0")
    ok(home, "mirrors", "sync", "web")
    daemon.stop()
    manifest = tree / "simple" / "insiders-mirror.json"
    root = json.loads(manifest.read_bytes())
    assert root["store"]
    manifest.write_text(json.dumps({"format": 1, "generator": "0.1", "projects": ["old"]}))

    daemon = launch(home, NO_UPSTREAM)
    try:
        assert ok(home, "mirrors", "sync", "web")
        assert json.loads(manifest.read_bytes())["store"] == root["store"]
        assert wheels(tree) == {wheel_filename("old", "1.0")}
    finally:
        daemon.stop()

    manifest.write_text(json.dumps({"format": 1, "generator": "0.1", "projects": ["old"]}))
    fresh = launch(mirrored_home(tmp_path / "fresh", tree), NO_UPSTREAM)
    try:
        refused = ctl(fresh.home, "mirrors", "sync", "web")
        assert refused.returncode == 1
        assert "insidersd --restore-from web" in refused.stderr
        assert wheels(tree) == {wheel_filename("old", "1.0")}
    finally:
        fresh.stop()


LARGE = 1200  # files of the large project: several of the restore's batches


def write_large_project(data_dir: Path, name: str, count: int) -> set[str]:
    """A project of `count` wheels (each with its metadata) written into the store's layout with
    the store's own structures, as the benchmark generates its stores: uploading them one by one
    would take minutes. Their filenames."""
    directory = data_dir / "packages" / name
    directory.mkdir(parents=True)
    stored = []
    for index in range(count):
        version = f"1.{index}"
        content = make_wheel(name, version, payload=os.urandom(2000))
        filename = wheel_filename(name, version)
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
        (directory / filename).write_bytes(content)
        (directory / f"{filename}.metadata").write_bytes(metadata)
        stored.append(
            StoredFile(
                filename=filename,
                version=version,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                metadata_sha256=hashlib.sha256(metadata).hexdigest(),
            )
        )
    project = Project(name=name, files=sort_files(stored), revision=1)
    atomic_write(directory / MANIFEST, msgspec.json.encode(project))
    return {f.filename for f in stored}


def named_and_whole(data_dir: Path) -> dict[str, int]:
    """project -> files its manifest names; every one of them is in the store with the size and
    sha256 the manifest records (what a reader of the store may count on after any kill)."""
    named: dict[str, int] = {}
    for manifest in (data_dir / "packages").glob(f"*/{MANIFEST}"):
        project = msgspec.json.decode(manifest.read_bytes(), type=Project)
        for stored in project.files:
            data = (manifest.parent / stored.filename).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (stored.size, stored.sha256)
            if stored.metadata_sha256 is not None:
                metadata = (manifest.parent / f"{stored.filename}.metadata").read_bytes()
                assert hashlib.sha256(metadata).hexdigest() == stored.metadata_sha256
        named[project.normalized] = len(project.files)
    return named


def test_an_interrupted_restore_stops_the_next_start(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, item 2: kill --restore-from part way, start without it; issue 26: a restore of
    a large project, cut short between its batches, resumes where it stopped and fetches only
    what its store does not name yet."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    for index in range(40):
        upload(daemon, tmp_path, f"bulk-{index % 4}", f"1.{index}", size=20000)
    daemon.stop()
    large = write_large_project(daemon.data_dir, "large", LARGE)
    daemon = launch(home, NO_UPSTREAM)
    ok(home, "mirrors", "sync", "web")
    daemon.stop()
    held = wheels(tree)
    assert len(held) == 40 + LARGE

    shutil.rmtree(daemon.data_dir)
    restoring = launch(home, [*NO_UPSTREAM, "--restore-from", "web"], wait=False)
    packages = daemon.data_dir / "packages"
    manifest = packages / "large" / MANIFEST

    def some_of_large() -> bool:
        try:
            named = len(msgspec.json.decode(manifest.read_bytes(), type=Project).files)
        except (OSError, msgspec.DecodeError):
            return False
        return 0 < named < LARGE

    assert wait_for(some_of_large, timeout=120, every=0.005)
    restoring.kill()
    named = named_and_whole(daemon.data_dir)
    partial = sum(named.values())
    assert 0 < named["large"] < LARGE, "the restore was not interrupted part way"
    assert partial < 40 + LARGE

    plain = launch(home, NO_UPSTREAM, wait=False)
    assert plain.proc is not None
    assert plain.proc.wait(30) == 1
    said = lines_with(plain.log(), "unfinished restore", "insidersd --restore-from web")
    assert len(said) == 1, plain.log()
    assert wheels(tree) == held

    # Nor is it finished from another target: a restore never mixes two mirrors.
    write_config(
        home,
        f'[mirrors.web]\ndirectory = "{tree}"\n'
        f'[mirrors.other]\ndirectory = "{tmp_path / "other"}"\n',
    )
    other = launch(home, [*NO_UPSTREAM, "--restore-from", "other"], wait=False)
    assert other.proc is not None
    assert other.proc.wait(30) == 1
    assert "unfinished restore from mirror web" in other.log()
    mirrored_home(home, tree)

    finished = launch(home, [*NO_UPSTREAM, "--restore-from", "web"])
    try:
        # What the interrupted run had published is not fetched again.
        assert f"({40 + LARGE - partial} files) from mirror web" in finished.log()
        assert {p.name for p in packages.rglob("*.whl")} == held
        assert sum(p["files"] for p in projects(home)) == 40 + LARGE  # type: ignore[misc]
        assert named_and_whole(daemon.data_dir)["large"] == LARGE
        assert {f.name for f in (packages / "large").glob("*.whl")} == large
        ok(home, "mirrors", "sync", "web")
        assert wheels(tree) == held
    finally:
        finished.stop()


def test_quarantine_reaches_the_front(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, item 3, through the shipped nginx front: a quarantined project's files,
    metadata and JSON documents are not served from the tree, and come back when lifted."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    port = free_port()
    nginx = Nginx(tmp_path / "nginx", front_site(tree, daemon.url, port), port=port).start()
    try:
        wheel = upload(daemon, tmp_path, "suspect", "1.0")

        def nothing_in_the_tree() -> None:
            page = get(f"{nginx.url}/simple/suspect/", headers={"Accept": PIP_ACCEPT})
            direct = get(f"{daemon.url}/simple/suspect/", headers={"Accept": PIP_ACCEPT})
            assert page.content == direct.content
            assert not list(tree.rglob(f"files/**/{wheel.name}"))

        check_quarantine_at_front(nginx.url, daemon, "web", wheel, nothing_in_the_tree)
    finally:
        nginx.stop()
        daemon.stop()


def test_a_restore_brings_back_every_status(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, item 4: statuses, yank reasons and removals come back exactly."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    for name, version in [("held", "1.0"), ("gone-by", "1.0"), ("plain", "1.0"), ("plain", "2.0")]:
        upload(daemon, tmp_path, name, version)
    ok(home, "projects", "status", "held", "quarantined", "--reason", "malware")
    ok(home, "projects", "status", "gone-by", "archived", "--reason", "moved to plain")
    ok(home, "yank", "plain", "1.0", "--reason", "bad build")
    ok(home, "remove", "plain", "2.0", "--yes")
    ok(home, "mirrors", "sync", "web")
    before = projects(home)
    shown = {p: show(home, p) for p in ("held", "plain")}
    manifests = {
        p.parent.name: json.loads(p.read_bytes())
        for p in daemon.data_dir.glob("packages/*/.project.json")
    }
    assert manifests["plain"]["removed"]
    daemon.stop()

    shutil.rmtree(daemon.data_dir)
    restored = launch(home, [*NO_UPSTREAM, "--restore-from", "web"])
    try:
        assert projects(home) == before
        for name, answer in shown.items():
            assert show(home, name) == answer
        again = {
            p.parent.name: json.loads(p.read_bytes())
            for p in restored.data_dir.glob("packages/*/.project.json")
        }
        assert again == manifests
        # Still quarantined: not served, not mirrored; and its files are kept for a lift.
        with restored.client() as client:
            url = f"/files/held/{wheel_filename('held', '1.0')}"
            assert client.get(url).status_code == 404
            ok(home, "projects", "status", "held", "active")
            assert client.get(url).status_code == 200
    finally:
        restored.stop()


def test_a_data_directory_put_back_from_an_older_backup(tmp_path: Path, launch: Launch) -> None:
    """The same store, older: its records of a project are behind the target's (a yank and a
    quarantine made since), though no file is missing. The target is refused, not rolled back."""
    tree = tmp_path / "mirror"
    home = mirrored_home(tmp_path / "daemon", tree)
    daemon = launch(home, NO_UPSTREAM)
    upload(daemon, tmp_path, "steady", "1.0")
    upload(daemon, tmp_path, "steady", "2.0")
    ok(home, "mirrors", "sync", "web")
    daemon.stop()
    backup = tmp_path / "backup"
    shutil.copytree(daemon.data_dir, backup)

    daemon = launch(home, NO_UPSTREAM)
    ok(home, "yank", "steady", "2.0", "--reason", "broken")
    ok(home, "projects", "status", "steady", "quarantined", "--reason", "malware")
    ok(home, "mirrors", "sync", "web")
    daemon.stop()
    page = (tree / "simple" / "steady" / "index.json").read_bytes()

    shutil.rmtree(daemon.data_dir)
    shutil.copytree(backup, daemon.data_dir)
    launch(home, NO_UPSTREAM)
    refused = ctl(home, "mirrors", "sync", "web")
    assert refused.returncode == 1
    assert "newer records of 1 project" in refused.stderr
    assert "insidersd --restore-from web" in refused.stderr
    assert (tree / "simple" / "steady" / "index.json").read_bytes() == page
    assert not (tree / "files" / "steady").exists()  # still quarantined there


def test_a_refused_target_keeps_its_names_from_the_upstream(tmp_path: Path, launch: Launch) -> None:
    """Issue 21, no dependency confusion: a daemon on an empty data directory beside a target that
    holds the team's private project serves on, and that name is answered 503 with what to run,
    never by the upstream index, where someone published the same name at a higher version."""
    public = tmp_path / "public"
    public.mkdir()
    upstream = launch(tmp_path / "upstream", NO_UPSTREAM)
    upload(upstream, public, "team-secret", "9.0")
    upload(upstream, public, "public-dep", "1.0")
    tree = tmp_path / "mirror"
    first = launch(mirrored_home(tmp_path / "daemon", tree), NO_UPSTREAM)
    upload(first, tmp_path, "team-secret", "1.0")
    ok(first.home, "mirrors", "sync", "web")
    first.stop()

    shutil.rmtree(first.data_dir)
    home = first.home
    daemon = launch(home, ["--upstream", upstream.index, "--upstream-mode", "proxy"])

    def state() -> dict[str, object]:
        listed = json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"][0]
        assert isinstance(listed, dict)
        return listed

    assert wait_for(lambda: state()["state"] == "refused"), state()
    with daemon.client() as client:
        for accept in (PIP_ACCEPT, "text/html"):
            answer = client.get("/simple/team-secret/", headers={"Accept": accept})
            assert answer.status_code == 503, answer.text
            assert "insidersd --restore-from web" in answer.text
            assert "insidersctl mirrors sync web --adopt|--force" in answer.text
        assert client.get("/simple/Team_Secret").headers["location"] == "/simple/team-secret/"
        # A name no mirror lists still comes from the upstream.
        assert client.get("/simple/public-dep/").status_code == 200
    installing = pip_install(daemon.index, tmp_path / "pip", "team-secret", check=False)
    assert installing.returncode != 0
    assert "No matching distribution found for team-secret" in installing.stderr
    assert not (tmp_path / "pip").exists() or not list((tmp_path / "pip").iterdir())

    # Said plainly: in the mirror's state, in `insidersctl status`, in the one log line.
    assert state()["withheld"] == 1
    status = ok(home, "status")
    assert "1 project it holds answered 503, not from the upstream" in status
    said = lines_with(daemon.log(), "mirror web", "--restore-from web")
    assert len(said) == 1, daemon.log()
    assert "answered 503, never from the upstream index" in said[0]
    daemon.stop()

    # Restored, the name is the store's again.
    restored = launch(
        home, ["--upstream", upstream.index, "--upstream-mode", "proxy", "--restore-from", "web"]
    )
    with restored.client() as client:
        page = client.get("/simple/team-secret/", headers={"Accept": PIP_ACCEPT})
        assert page.status_code == 200
        assert [f["filename"] for f in page.json()["files"]] == [
            wheel_filename("team-secret", "1.0")
        ]


def test_names_are_withheld_before_the_first_comparison_judges(
    tmp_path: Path, launch: Launch
) -> None:
    """From the first request on: the daemon reads each target's root manifest before it serves,
    so a name the target lists and the store lacks is not sent upstream while the comparison
    that judges the target still runs (here it waits on a manifest that is a FIFO)."""
    public = tmp_path / "public"
    public.mkdir()
    upstream = launch(tmp_path / "upstream", NO_UPSTREAM)
    upload(upstream, public, "team-secret", "9.0")
    tree = tmp_path / "mirror"
    first = launch(mirrored_home(tmp_path / "daemon", tree), NO_UPSTREAM)
    upload(first, tmp_path, "team-secret", "1.0")
    upload(first, tmp_path, "slow", "1.0")
    ok(first.home, "mirrors", "sync", "web")
    first.stop()
    shutil.rmtree(first.data_dir)
    manifest = tree / "simple" / "slow" / "insiders-project.json"
    manifest.unlink()
    os.mkfifo(manifest)  # reading it waits for a writer: the judgement waits

    home = first.home
    daemon = launch(home, ["--upstream", upstream.index, "--upstream-mode", "proxy"])
    try:
        with daemon.client() as client:
            answer = client.get("/simple/team-secret/")
            assert answer.status_code == 503, answer.text
            assert "being compared with this store" in answer.text
        listed = json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"][0]
        assert listed["state"] == "comparing"
    finally:
        # The comparison, waiting to read it, gets bytes that are no manifest: it goes on.
        writer = wait_for(lambda: _open_for_writing(manifest))
        assert writer, "the comparison never read the manifest"
        os.write(writer, b"not a manifest")
        os.close(writer)
    assert wait_for(
        lambda: (
            json.loads(ok(home, "--json", "mirrors", "list"))["mirrors"][0]["state"] == "refused"
        )
    )
    with daemon.client() as client:
        answer = client.get("/simple/team-secret/")
        assert answer.status_code == 503
        assert "insidersd --restore-from web" in answer.text


def _open_for_writing(fifo: Path) -> int | None:
    """A FIFO opened for writing once a reader waits on it (None: nobody reads it yet)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None
