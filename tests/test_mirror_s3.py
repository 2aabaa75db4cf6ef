"""A bucket mirror on a real S3-compatible server (SeaweedFS, started once for the module): kept
current by insidersd, installed from through nginx in front of the bucket, restored from into an
empty data directory, and a target that is down slows nothing."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from insiders.config import MirrorSettings
from insiders.mirror.targets.s3 import S3Target
from tests.bucket_proxy import BucketProxy
from tests.fronts import (
    BUCKET_CONF,
    NEGOTIATED,
    UNRANKED,
    Nginx,
    SeaweedFS,
    answer,
    ctl,
    edit_site,
    free_port,
    get,
    twine_upload,
    uv_install,
    wait_for,
    write_config,
)
from tests.mirrors import PIP_ACCEPT, check_quarantine_at_front
from tests.support import Daemon, installed_version, make_wheel, pip_install, wheel_filename

_buckets = itertools.count()


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(weed: SeaweedFS) -> str:
    name = f"mirror-{next(_buckets)}-{int(time.time())}"
    weed.client().create_bucket(Bucket=name)
    return name


def bucket_config(name: str, weed: SeaweedFS, bucket: str, prefix: str, **extra: str) -> str:
    lines = [
        f"[mirrors.{name}]",
        f'endpoint = "{weed.endpoint}"',
        f'bucket = "{bucket}"',
        f'prefix = "{prefix}"',
        *(f'{key} = "{value}"' for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def held(weed: SeaweedFS, bucket: str, prefix: str) -> dict[str, int]:
    client = weed.client()
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            found[item["Key"][len(prefix) :]] = item["Size"]
    return found


def page_lists(weed: SeaweedFS, bucket: str, key: str, filename: str) -> bool:
    try:
        body = weed.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception:
        return False
    return filename.encode() in body


def bucket_front(
    tmp_path: Path, weed: SeaweedFS, bucket: str, prefix: str, upstream: str = '""'
) -> Nginx:
    port = free_port()
    site = edit_site(
        BUCKET_CONF.read_text(),
        {
            "server": weed.endpoint.removeprefix("http://"),
            "listen": f"127.0.0.1:{port}",
            "set $insiders_bucket_path": f"/{bucket}/{prefix}",
            "set $insiders_bucket_upstream": upstream,
        },
    )
    return Nginx(tmp_path / "nginx", site, port=port).start()


def credentials(tmp_path: Path, *mirrors: str) -> dict[str, str]:
    """A credentials directory, as systemd's LoadCredential= makes one, holding the keys of each
    of `mirrors` (SeaweedFS checks none): the daemon's environment that names it."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    for name in mirrors:
        (folder / f"mirror-{name}-access-key-id").write_text("insiders")
        (folder / f"mirror-{name}-secret-access-key").write_text("secret")
    return {"CREDENTIALS_DIRECTORY": str(folder)}


def keyed_bucket_config(home: Path, weed: SeaweedFS, bucket: str, prefix: str) -> Path:
    """HOME's config: a [mirrors.bucket] with key files (SeaweedFS checks none); their folder."""
    secrets = home.parent / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "key-id").write_text("insiders\n")
    (secrets / "secret").write_text("not-checked-by-this-server\n")
    keys = {
        "access-key-id-file": str(secrets / "key-id"),
        "secret-access-key-file": str(secrets / "secret"),
    }
    write_config(home, bucket_config("bucket", weed, bucket, prefix, **keys))
    return secrets


def test_bucket_mirror_installs_through_nginx(
    weed: SeaweedFS, bucket: str, dists: dict[str, list[Path]], tmp_path: Path
) -> None:
    home = tmp_path / "daemon"
    secrets = keyed_bucket_config(home, weed, bucket, "team/index")
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    nginx = bucket_front(tmp_path, weed, bucket, "team/index")
    try:
        twine_upload(daemon.url, daemon.token, dists["demo-1.0"], tmp_path)
        wheel = next(p for p in dists["demo-1.0"] if p.suffix == ".whl")
        key = "team/index/simple/demo-pkg/index.json"
        assert wait_for(lambda: page_lists(weed, bucket, key, wheel.name))
        objects = held(weed, bucket, "team/index/")
        assert {
            "simple/index.html",
            "simple/index.json",
            "simple/insiders-mirror.json",
            "simple/demo-pkg/index.html",
            "simple/demo-pkg/index.json",
            "simple/demo-pkg/insiders-project.json",
            f"files/demo-pkg/{wheel.name}",
            f"files/demo-pkg/{wheel.name}.metadata",
            "pypi/demo-pkg/json",
            "pypi/demo-pkg/1.0.0/json",
        } <= objects.keys()
        assert objects[f"files/demo-pkg/{wheel.name}"] == wheel.stat().st_size
        client = weed.client()
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "application/vnd.pypi.simple.v1+json"
        assert head["CacheControl"] == "no-cache"

        # Through nginx in front of the bucket: pages by Accept, files with their hashes.
        page = get(f"{nginx.url}/simple/demo-pkg/", headers={"Accept": PIP_ACCEPT})
        assert page.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
        assert (
            page.content
            == get(f"{daemon.url}/simple/demo-pkg/", headers={"Accept": PIP_ACCEPT}).content
        )
        for entry in page.json()["files"]:
            body = get(urljoin(f"{nginx.url}/simple/demo-pkg/", entry["url"])).content
            assert hashlib.sha256(body).hexdigest() == entry["hashes"]["sha256"]
        assert get(f"{nginx.url}/simple/").text.count("demo-pkg/") == 1
        assert get(f"{nginx.url}/pypi/demo-pkg/json").json()["info"]["version"] == "1.0.0"
        assert get(f"{nginx.url}/simple/not-there/").status_code == 404
        pip_install(f"{nginx.url}/simple/", tmp_path / "pip", "demo-pkg")
        assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"

        # A new version goes up to the bucket and installs from it.
        twine_upload(daemon.url, daemon.token, dists["demo-1.1"], tmp_path)
        newer = next(p for p in dists["demo-1.1"] if p.suffix == ".whl")
        assert wait_for(lambda: page_lists(weed, bucket, key, newer.name))
        uv_install(f"{nginx.url}/simple/", tmp_path / "uv", "demo-pkg")
        assert installed_version(tmp_path / "uv", "demo_pkg") == "1.1.0"

        # A file is written once: a second write of its key is refused by the server itself.
        target = S3Target(
            "check",
            MirrorSettings(
                endpoint=weed.endpoint,
                bucket=bucket,
                prefix="team/index",
                access_key_id_file=str(secrets / "key-id"),
                secret_access_key_file=str(secrets / "secret"),
            ),
            None,
        )
        other = tmp_path / "other-bytes"
        other.write_bytes(b"not the wheel")
        assert target.put_file(f"files/demo-pkg/{wheel.name}", other, 13, "x/y") is False
        stored = client.get_object(Bucket=bucket, Key=f"team/index/files/demo-pkg/{wheel.name}")
        assert stored["Body"].read() == wheel.read_bytes()
        target.close()
    finally:
        nginx.stop()
        daemon.stop()


def test_restore_from_a_bucket(weed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    env = credentials(tmp_path, "backup")
    home = tmp_path / "daemon"
    write_config(home, bucket_config("backup", weed, bucket, ""))
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    uploads = [("one", "1.0"), ("one", "2.0"), ("Two_Pkg", "0.1"), ("three", "3.0"), ("held", "1")]
    for name, version in uploads:
        daemon.upload_wheel(tmp_path, name, version, f"{name}{version}".encode() * 999)
    assert ctl(home, "yank", "one", "1.0", "--reason", "bad build").returncode == 0
    assert ctl(home, "remove", "three", "3.0", "--yes").returncode == 0
    # Every status comes back (issue 21, item 4): a quarantine, an archive with its reason.
    assert ctl(home, "projects", "status", "held", "quarantined", "--reason", "x").returncode == 0
    assert ctl(home, "projects", "status", "two-pkg", "archived", "--reason", "y").returncode == 0
    synced = ctl(home, "mirrors", "sync", "backup")
    assert synced.returncode == 0, synced.stderr

    def snapshot(daemon: Daemon) -> dict[str, bytes]:
        with daemon.client() as client:
            root = client.get("/simple/", headers={"Accept": PIP_ACCEPT})
            pages = {"/simple/": root.content}
            for project in root.json()["projects"]:
                for accept in (PIP_ACCEPT, "text/html"):
                    url = f"/simple/{project['name']}/"
                    served = client.get(url, headers={"Accept": accept}, follow_redirects=True)
                    pages[f"{url} {accept}"] = served.content
            pages["projects"] = json.dumps(
                json.loads(ctl(daemon.home, "--json", "projects", "list").stdout)["projects"]
            ).encode()
            return pages

    before = snapshot(daemon)
    assert b"bad build" in before[f"/simple/one/ {PIP_ACCEPT}"]
    daemon.stop()

    shutil.rmtree(daemon.data_dir)
    restored = Daemon(home, ["--upstream-mode", "none", "--restore-from", "backup"], env=env)
    restored.start()
    try:
        assert "restored 3 projects (4 files) from mirror backup" in restored.log()
        assert snapshot(restored) == before
        statuses = {p["name"]: p["status"] for p in json.loads(before["projects"])}
        assert statuses == {"held": "quarantined", "one": "active", "Two_Pkg": "archived"}
        # The files are the same bytes, and install.
        pip_install(restored.index, tmp_path / "pip", "one==2.0", "two-pkg")
        # A second restore into a store that holds projects is refused.
        restored.stop()
        again = Daemon(home, ["--upstream-mode", "none", "--restore-from", "backup"], env=env)
        again.start(wait=False)
        assert again.proc is not None
        assert again.proc.wait(30) == 1
        assert "fills an empty data directory only" in again.log()
    finally:
        if restored.proc and restored.proc.poll() is None:
            restored.stop()


def test_a_target_that_is_down_slows_nothing(weed: SeaweedFS, tmp_path: Path) -> None:
    home = tmp_path / "daemon"
    late_bucket = f"late-{int(time.time())}"
    closed = f"http://127.0.0.1:{free_port()}"
    write_config(
        home,
        bucket_config("down", weed, "nowhere", "").replace(weed.endpoint, closed)
        + bucket_config("late", weed, late_bucket, "p"),
    )
    env = credentials(tmp_path, "down", "late")
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    try:
        daemon.upload_wheel(tmp_path, "steady", "1.0")
        with daemon.client() as client:
            assert client.get("/simple/steady/").status_code == 200

        def states() -> dict[str, dict[str, object]]:
            answer = json.loads(ctl(home, "--json", "mirrors", "list").stdout)
            return {m["name"]: m for m in answer["mirrors"]}

        assert wait_for(
            lambda: all(m["state"] == "failing" for m in states().values()), timeout=60
        ), states()
        mirrors = states()
        assert "Could not connect" in str(mirrors["down"]["last_error"])
        assert "NoSuchBucket" in str(mirrors["late"]["last_error"])
        status = ctl(home, "status")
        assert "down" in status.stdout
        assert "NoSuchBucket" in status.stderr
        # Uploads go on while both fail.
        second = daemon.upload_wheel(tmp_path, "steady", "1.1")

        # The bucket appears: the late target catches up; the other keeps failing alone.
        weed.client().create_bucket(Bucket=late_bucket)
        # `mirrors sync` answers the first failure; a new bucket may need a moment to take writes.
        synced = wait_for(lambda: (r := ctl(home, "mirrors", "sync", "late")).returncode == 0 and r)
        assert synced, ctl(home, "mirrors", "list").stderr
        assert page_lists(weed, late_bucket, "p/simple/steady/index.html", second.name)
        assert states()["late"]["state"] == "idle"
        assert states()["down"]["state"] == "failing"
    finally:
        daemon.stop()


def test_an_empty_data_directory_never_empties_the_bucket(
    weed: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Issue 21, item 1, on a bucket: a daemon on an empty data directory refuses to make the
    bucket match its store, says what to run, and a restore then brings everything back."""
    env = credentials(tmp_path, "backup")
    home = tmp_path / "daemon"
    write_config(home, bucket_config("backup", weed, bucket, "p"))
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    try:
        for name, version in [("one", "1.0"), ("two", "2.0")]:
            daemon.upload_wheel(tmp_path, name, version)
        assert ctl(home, "mirrors", "sync", "backup").returncode == 0
    finally:
        daemon.stop()
    before = held(weed, bucket, "p/")
    assert {key for key in before if key.endswith(".whl")} == {
        f"files/one/{wheel_filename('one', '1.0')}",
        f"files/two/{wheel_filename('two', '2.0')}",
    }

    shutil.rmtree(daemon.data_dir)
    empty = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    try:
        refused = ctl(home, "mirrors", "sync", "backup")
        assert refused.returncode == 1
        assert "insidersd --restore-from backup" in refused.stderr
        assert held(weed, bucket, "p/") == before
    finally:
        empty.stop()
    restored = Daemon(home, ["--upstream-mode", "none", "--restore-from", "backup"], env=env)
    restored.start()
    try:
        assert "restored 2 projects (2 files) from mirror backup" in restored.log()
        synced = ctl(home, "mirrors", "sync", "backup")
        assert synced.returncode == 0, synced.stderr
        assert {k for k in held(weed, bucket, "p/") if k.endswith(".whl")} == {
            k for k in before if k.endswith(".whl")
        }
    finally:
        restored.stop()


def test_quarantine_reaches_the_bucket(weed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """Issue 21, item 3, through nginx in front of the bucket: a quarantined project's files,
    metadata and JSON documents answer 404 there, as the daemon answers; lifted, they are back."""
    env = credentials(tmp_path, "bucket")
    home = tmp_path / "daemon"
    write_config(home, bucket_config("bucket", weed, bucket, "q"))
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    nginx = bucket_front(tmp_path, weed, bucket, "q")
    try:
        wheel = daemon.upload_wheel(tmp_path, "suspect", "1.0", payload=b"s" * 5000)
        check_quarantine_at_front(nginx.url, daemon, "bucket", wheel)
    finally:
        nginx.stop()
        daemon.stop()


def test_a_bucket_is_compared_by_content(weed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """Issue 21, item 5, on a bucket: an object with other bytes of the same size is reported by
    `mirrors verify` and written again by `mirrors sync` (a file is written once otherwise)."""
    env = credentials(tmp_path, "bucket")
    home = tmp_path / "daemon"
    write_config(home, bucket_config("bucket", weed, bucket, "c"))
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    try:
        wheel = daemon.upload_wheel(tmp_path, "solid", "1.0", b"s" * 5000)
        assert ctl(home, "mirrors", "sync", "bucket").returncode == 0
        assert ctl(home, "mirrors", "verify", "bucket").returncode == 0

        key = f"files/solid/{wheel.name}"
        altered = bytearray(wheel.read_bytes())
        altered[100] ^= 0xFF
        client = weed.client()
        client.put_object(Bucket=bucket, Key=f"c/{key}", Body=bytes(altered))
        verified = ctl(home, "mirrors", "verify", "bucket")
        assert verified.returncode == 1
        assert verified.stdout.startswith(f"{key}: holds {len(altered)} bytes")
        synced = ctl(home, "mirrors", "sync", "bucket")
        assert synced.returncode == 0, synced.stderr
        assert "1 of them held other bytes" in synced.stdout
        assert client.get_object(Bucket=bucket, Key=f"c/{key}")["Body"].read() == wheel.read_bytes()
        assert ctl(home, "mirrors", "verify", "bucket").returncode == 0
    finally:
        daemon.stop()


def test_a_bucket_keeps_what_the_daemon_did_not_write(
    weed: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Issue 21, item 7, on a bucket: a removal deletes the removed file's objects and pages,
    never an object under the prefix that no manifest of the daemon's names."""
    env = credentials(tmp_path, "bucket")
    home = tmp_path / "daemon"
    write_config(home, bucket_config("bucket", weed, bucket, "s"))
    daemon = Daemon(home, ["--upstream-mode", "none"], env=env).start()
    try:
        for version in ("1.0", "2.0"):
            daemon.upload_wheel(tmp_path, "mine", version)
        assert ctl(home, "mirrors", "sync", "bucket").returncode == 0
        strays = [f"files/mine/{wheel_filename('mine', '9.9')}", "files/theirs/x.whl", "notes"]
        client = weed.client()
        for key in strays:
            client.put_object(Bucket=bucket, Key=f"s/{key}", Body=b"not the daemon's")
        assert ctl(home, "remove", "mine", "1.0", "--yes").returncode == 0
        assert ctl(home, "mirrors", "sync", "bucket").returncode == 0
        objects = held(weed, bucket, "s/")
        assert f"files/mine/{wheel_filename('mine', '1.0')}" not in objects
        assert "pypi/mine/1.0/json" not in objects
        assert f"files/mine/{wheel_filename('mine', '2.0')}" in objects
        assert set(strays) <= objects.keys()
    finally:
        daemon.stop()


def test_bucket_front_answers_as_the_daemon_does(
    weed: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Issue 21, item 8, through nginx in front of the bucket: `?format=`, q values and the HTML
    charset as the daemon negotiates them; a name the bucket does not host goes to the upstream,
    a hosted one never does, so a hosted project with a public dependency installs."""
    public = tmp_path / "public"
    public.mkdir()
    upstream = Daemon(tmp_path / "upstream", ["--upstream-mode", "none"]).start()
    home = tmp_path / "daemon"
    write_config(home, bucket_config("bucket", weed, bucket, "p"))
    env = credentials(tmp_path, "bucket")
    daemon = Daemon(home, ["--upstream", upstream.index, "--upstream-mode", "redirect"], env=env)
    daemon.start()
    nginx = bucket_front(tmp_path, weed, bucket, "p", upstream=upstream.index)
    try:
        # The public index has the dependency, and the team's name at a higher version.
        for name, version in [("public-dep", "2.0"), ("team-app", "9.0")]:
            upstream.upload_wheel(public, name, version)
        app = tmp_path / wheel_filename("team-app", "1.0")
        app.write_bytes(make_wheel("team-app", "1.0", requires=("public-dep>=2",)))
        assert daemon.upload(app).status_code == 200
        assert ctl(home, "mirrors", "sync", "bucket").returncode == 0

        for page in ("/simple/", "/simple/team-app/"):
            for query, accept in NEGOTIATED:
                through = answer(f"{nginx.url}{page}", query, accept)
                direct = answer(f"{daemon.url}{page}", query, accept)
                if accept == UNRANKED:
                    # Below q=1 both: no insidersd behind this front to rank them; HTML.
                    assert through[1] == "text/html; charset=utf-8"
                    continue
                assert through == direct, (page, query, accept, through[:2], direct[:2])

        # Pages are compressed for clients that take gzip, in either format.
        for version in range(12):
            daemon.upload_wheel(tmp_path, "many-versions", f"1.{version}")
        assert ctl(home, "mirrors", "sync", "bucket").returncode == 0
        for accept in (PIP_ACCEPT, "text/html"):
            headers = {"Accept": accept, "Accept-Encoding": "gzip"}
            with httpx.Client(timeout=30) as client:
                page = client.get(f"{nginx.url}/simple/many-versions/", headers=headers)
            assert page.headers.get("content-encoding") == "gzip", accept
            assert len(page.content) > 1024
            assert (
                page.content == get(f"{daemon.url}/simple/many-versions/", headers=headers).content
            )

        # Not hosted: the upstream's, as the daemon's redirect mode answers.
        for url in (nginx.url, daemon.url):
            moved = get(f"{url}/simple/public-dep/")
            assert moved.status_code == 302
            assert moved.headers["location"] == f"{upstream.index}public-dep/"
        pip_install(f"{nginx.url}/simple/", tmp_path / "pip", "team-app")
        installed = sorted(p.name for p in (tmp_path / "pip").glob("*.dist-info"))
        assert installed == ["public_dep-2.0.dist-info", "team_app-1.0.dist-info"]
    finally:
        nginx.stop()
        daemon.stop()
        upstream.stop()


def store_objects(data_dir: Path) -> dict[str, bytes]:
    """Every object of a store: its identity, each project's manifest, files and metadata."""
    found = {"store.json": (data_dir / "store.json").read_bytes()}
    for path in sorted((data_dir / "packages").rglob("*")):
        if path.is_file():
            found[str(path.relative_to(data_dir))] = path.read_bytes()
    return found


def bucket_objects(weed: SeaweedFS, bucket: str, prefix: str) -> dict[str, str]:
    client = weed.client()
    return {
        key: hashlib.sha256(
            client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
        ).hexdigest()
        for key in held(weed, bucket, prefix)
    }


def test_backup_drill(weed: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    """Issue 21, the README's backup drill end to end: the data directory is lost; on another
    machine (another home: config, data and runtime directories, another daemon) the store is
    restored from the bucket, and the two stores are equal object by object, statuses, yanks,
    removals and identity included. The drill's daemon changes nothing in the bucket."""
    env = credentials(tmp_path, "backup")
    config = bucket_config("backup", weed, bucket, "team")
    first = tmp_path / "first-machine"
    write_config(first, config)
    daemon = Daemon(first, ["--upstream-mode", "none"], env=env).start()
    try:
        for name, version in [
            ("app", "1.0"), ("app", "1.1"), ("app", "2.0"), ("lib", "0.1"), ("held", "3.0"),
            ("old-tool", "1.0"), ("gone", "1.0"),
        ]:  # fmt: skip
            daemon.upload_wheel(tmp_path, name, version, f"{name}{version}".encode() * 500)
        for args in [
            ("yank", "app", "1.1", "--reason", "broken build"),
            ("remove", "app", "1.0", "--yes"),
            ("remove", "gone", "1.0", "--yes"),
            ("projects", "status", "held", "quarantined", "--reason", "malware"),
            ("projects", "status", "old-tool", "archived", "--reason", "use app"),
            ("mirrors", "sync", "backup"),
        ]:
            done = ctl(first, *args)
            assert done.returncode == 0, (args, done.stderr)
        listed = json.loads(ctl(first, "--json", "projects", "list").stdout)["projects"]
    finally:
        daemon.stop()
    lost = store_objects(daemon.data_dir)
    assert {"status": "quarantined"}.items() <= json.loads(
        lost["packages/held/.project.json"]
    ).items()
    in_bucket = bucket_objects(weed, bucket, "team/")
    shutil.rmtree(daemon.data_dir)  # the data directory is lost

    second = tmp_path / "second-machine"
    write_config(second, config)
    drill = Daemon(second, ["--upstream-mode", "none", "--restore-from", "backup"], env=env)
    drill.start()
    try:
        assert "restored" in drill.log()
        assert drill.data_dir != daemon.data_dir
        restored = store_objects(drill.data_dir)
        assert restored.keys() == lost.keys()
        for key, body in lost.items():
            assert restored[key] == body, key
        assert json.loads(ctl(second, "--json", "projects", "list").stdout)["projects"] == listed
        assert ctl(second, "mirrors", "verify", "backup").returncode == 0
        synced = ctl(second, "mirrors", "sync", "backup")
        assert synced.returncode == 0, synced.stderr
        assert "0 files and 0 pages written, 0 removed" in synced.stdout or (
            "0 files" in synced.stdout and "0 removed" in synced.stdout
        ), synced.stdout
    finally:
        drill.stop()
    assert bucket_objects(weed, bucket, "team/") == in_bucket


def check_order(puts: list[tuple[float, float, str]], projects: set[str]) -> None:
    """No reader of the bucket could follow a link to something not written yet: every page of
    a project was started after each of its files was written, its manifest after its pages,
    and the root (its pages and manifest) after the manifest of every project it lists."""
    written: dict[str, float] = {}  # key -> when its first write was complete
    for _, end, key in puts:
        written.setdefault(key, end)
    first_start: dict[str, float] = {}
    for start, _, key in puts:
        first_start.setdefault(key, start)
    root = {"simple/index.html", "simple/index.json", "simple/insiders-mirror.json"}
    for name in projects:
        files = [k for k in written if k.startswith(f"files/{name}/")]
        pages = [
            k
            for k in written
            if k.startswith((f"simple/{name}/", f"pypi/{name}/"))
            and not k.endswith("insiders-project.json")
        ]
        manifest = f"simple/{name}/insiders-project.json"
        assert files, name
        assert pages, name
        assert manifest in written, name
        assert max(written[f] for f in files) <= min(first_start[p] for p in pages), name
        assert max(written[p] for p in pages) <= first_start[manifest], name
        for key in root:
            assert written[manifest] <= first_start[key], (name, key)


def test_parallel_bucket_writes_keep_the_order(
    weed: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Issue 26: with several requests in flight (at most `concurrency`), a full copy and a burst
    of uploads still write a project's files, then its pages, then its manifest, then the root."""
    home = tmp_path / "daemon"
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    names = {f"order-{i}" for i in range(6)}
    try:
        for name in sorted(names):
            for minor in range(4):
                daemon.upload_wheel(tmp_path, name, f"1.{minor}", b"x" * 3000)
    finally:
        daemon.stop()
    proxy = BucketProxy(weed.endpoint)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key-id").write_text("insiders\n")
    (secrets / "secret").write_text("not-checked-by-this-server\n")
    config = bucket_config(
        "bucket",
        weed,
        bucket,
        "ordered",
        **{
            "access-key-id-file": str(secrets / "key-id"),
            "secret-access-key-file": str(secrets / "secret"),
        },
    )
    write_config(home, config.replace(weed.endpoint, proxy.endpoint) + "concurrency = 4\n")
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    try:
        # The full copy at start.
        assert wait_for(lambda: "mirror bucket: current" in daemon.log(), timeout=120)
        puts = proxy.puts(bucket, "ordered/")
        assert sum(1 for *_, key in puts if key.startswith("files/")) == 6 * 4 * 2
        check_order(puts, names)
        assert 2 <= proxy.most_in_flight() <= 4, proxy.most_in_flight()

        # A burst into every project at once: each round is ordered the same way.
        proxy.log.clear()
        uploads = []
        for minor in range(4, 8):
            for name in sorted(names):
                path = tmp_path / wheel_filename(name, f"1.{minor}")
                path.write_bytes(make_wheel(name, f"1.{minor}", payload=b"y" * 3000))
                uploads.append(path)
        with ThreadPoolExecutor(4) as pool:
            assert all(r.status_code == 200 for r in pool.map(daemon.upload, uploads))
        last = uploads[-1].name
        key = f"ordered/simple/{last.split('-')[0].replace('_', '-')}/index.html"
        assert wait_for(lambda: page_lists(weed, bucket, key, last), timeout=60)
        assert wait_for(
            lambda: (
                json.loads(ctl(home, "--json", "mirrors", "list").stdout)["mirrors"][0]["pending"]
                == 0
            )
        )
        puts = proxy.puts(bucket, "ordered/")
        rounds: dict[str, list[tuple[float, float, str]]] = {}
        for put in puts:
            rounds.setdefault(put[2], []).append(put)
        for path in uploads:
            name = path.name.split("-")[0].replace("_", "-")
            file_written = rounds[f"files/{name}/{path.name}"][0][1]
            # The page that first lists the file was started after the file was written.
            listing = [
                start
                for start, _, k in puts
                if k == f"simple/{name}/index.html" and start >= file_written
            ]
            assert listing, path.name
        assert proxy.most_in_flight() <= 4
    finally:
        daemon.stop()
        proxy.close()
