"""A directory mirror kept current by insidersd, served by Debian's nginx with the shipped site
config in front of the real daemon: pip and uv install through it, uploads through it appear
through it, readers never see a link or a hash the tree cannot back, kill -9 converges."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import threading
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.fronts import (
    NEGOTIATED,
    Nginx,
    answer,
    ctl,
    free_port,
    front_site,
    get,
    twine_upload,
    uv_install,
    wait_for,
    write_config,
)
from tests.support import Daemon, installed_version, make_wheel, pip_install, wheel_filename

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def mirrored_daemon(home: Path, tree: Path, *args: str, config: str = "") -> Daemon:
    write_config(home, f'[mirrors.web]\ndirectory = "{tree}"\n{config}')
    return Daemon(home, list(args) or ["--upstream-mode", "none"]).start()


def mirrored(tree: Path, name: str, filename: str) -> bool:
    """Whether the tree's page of `name` links `filename` (the file comes before its page)."""
    page = tree / "simple" / name / "index.html"
    return page.exists() and filename in page.read_text()


@pytest.fixture
def front(tmp_path: Path):  # type: ignore[no-untyped-def]
    tree = tmp_path / "mirror"
    daemon = mirrored_daemon(
        tmp_path / "daemon",
        tree,
        "--upstream",
        "http://127.0.0.1:9/upstream/simple/",
        "--upstream-mode",
        "redirect",
    )
    port = free_port()
    nginx = Nginx(tmp_path / "nginx", front_site(tree, daemon.url, port), port=port)
    try:
        nginx.start()  # a site config nginx refuses must not leave the daemon running
        yield daemon, nginx, tree
    finally:
        nginx.stop()
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()


def test_front_serves_the_mirror_and_passes_the_rest(
    front: tuple[Daemon, Nginx, Path], dists: dict[str, list[Path]], tmp_path: Path
) -> None:
    daemon, nginx, tree = front
    # Uploads go through nginx to insidersd, and appear through nginx.
    twine_upload(nginx.url, daemon.token, dists["demo-1.0"], tmp_path)
    wheel = next(p for p in dists["demo-1.0"] if p.suffix == ".whl")
    assert wait_for(lambda: mirrored(tree, "demo-pkg", wheel.name))
    pip_install(f"{nginx.url}/simple/", tmp_path / "pip", "demo-pkg")
    assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"

    # The page by Accept: JSON for pip and uv, HTML for a browser; the same bytes insidersd serves.
    for accept, content_type in [(PIP_ACCEPT, JSON_TYPE), ("text/html", "text/html")]:
        through = get(f"{nginx.url}/simple/demo-pkg/", headers={"Accept": accept})
        direct = get(f"{daemon.url}/simple/demo-pkg/", headers={"Accept": accept})
        assert through.status_code == 200
        assert through.headers["content-type"].startswith(content_type)
        assert through.content == direct.content
        assert "Accept" in through.headers.get("vary", "")
    root = get(f"{nginx.url}/simple/", headers={"Accept": PIP_ACCEPT})
    assert root.json()["projects"] == [{"name": "Demo_Pkg"}]

    # Names that are not normalised are redirected to the normalised one.
    for path in ("/simple/Demo_Pkg/", "/simple/demo.pkg/", "/simple/demo-pkg"):
        moved = get(f"{nginx.url}{path}")
        assert moved.status_code == 301, path
        assert moved.headers["location"].endswith("/simple/demo-pkg/")

    # Files and their metadata, with the hashes the page gives.
    page = get(f"{nginx.url}/simple/demo-pkg/", headers={"Accept": PIP_ACCEPT}).json()
    for entry in page["files"]:
        url = urljoin(f"{nginx.url}/simple/demo-pkg/", entry["url"])
        body = get(url).content
        assert hashlib.sha256(body).hexdigest() == entry["hashes"]["sha256"]
        if entry.get("core-metadata"):
            metadata = get(f"{url}.metadata").content
            assert hashlib.sha256(metadata).hexdigest() == entry["core-metadata"]["sha256"]

    # The JSON API documents, from the tree: the daemon's, with the URLs of the front.
    document = get(f"{nginx.url}/pypi/demo-pkg/json").json()
    direct_document = get(f"{daemon.url}/pypi/demo-pkg/json").json()
    assert document["info"]["version"] == direct_document["info"]["version"] == "1.0.0"
    assert document["releases"].keys() == direct_document["releases"].keys()
    file_url = urljoin(nginx.url, document["urls"][0]["url"])
    assert (
        hashlib.sha256(get(file_url).content).hexdigest()
        == (document["urls"][0]["digests"]["sha256"])
    )
    assert get(f"{nginx.url}/pypi/demo-pkg/1.0.0/json").json()["info"]["version"] == "1.0.0"

    # Everything that is not in the tree is insidersd's: the web page, the upstream fallback.
    assert "insiders" in get(f"{nginx.url}/").text
    fallback = get(f"{nginx.url}/simple/not-hosted-here/")
    assert fallback.status_code == 302
    assert fallback.headers["location"] == "http://127.0.0.1:9/upstream/simple/not-hosted-here/"

    # A second version, uploaded through the front, installs through it with uv.
    twine_upload(nginx.url, daemon.token, dists["demo-1.1"], tmp_path)
    newer = next(p for p in dists["demo-1.1"] if p.suffix == ".whl")
    assert wait_for(lambda: mirrored(tree, "demo-pkg", newer.name))
    uv_install(f"{nginx.url}/simple/", tmp_path / "uv", "demo-pkg")
    assert installed_version(tmp_path / "uv", "demo_pkg") == "1.1.0"

    # The hosted index keeps being served with insidersd stopped: those pages are nginx's.
    daemon.stop()
    assert get(f"{nginx.url}/simple/demo-pkg/").status_code == 200
    pip_install(f"{nginx.url}/simple/", tmp_path / "pip2", "demo-pkg==1.0.0")
    assert get(f"{nginx.url}/simple/not-hosted-here/").status_code == 502


def test_front_gzips_pages(front: tuple[Daemon, Nginx, Path], tmp_path: Path) -> None:
    daemon, nginx, tree = front
    wheels = []
    for index in range(12):
        path = tmp_path / wheel_filename("many-versions", f"1.{index}")
        path.write_bytes(make_wheel("many-versions", f"1.{index}"))
        wheels.append(path)
        assert daemon.upload(path).status_code == 200
    assert wait_for(lambda: mirrored(tree, "many-versions", wheels[-1].name))
    plain = get(f"{nginx.url}/simple/many-versions/", headers={"Accept-Encoding": "identity"})
    assert len(plain.content) > 1024
    with httpx.Client() as client:
        raw = client.get(f"{nginx.url}/simple/many-versions/", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == plain.content  # httpx decoded it
        # The .gz the mirror wrote beside the page, sent as it is (gzip_static): no CPU per request.
        compressed = tree / "simple" / "many-versions" / "index.html.gz"
        assert raw.headers["content-length"] == str(compressed.stat().st_size)


def test_changes_rewrite_one_project_and_the_root(
    front: tuple[Daemon, Nginx, Path], tmp_path: Path
) -> None:
    daemon, nginx, tree = front
    for name in ("alpha", "beta"):
        daemon.upload_wheel(tmp_path, name, "1.0")
    assert wait_for(lambda: mirrored(tree, "beta", wheel_filename("beta", "1.0")))
    beta_page = tree / "simple" / "beta" / "index.html"
    before = beta_page.stat().st_mtime_ns

    # A yank rewrites alpha's pages (and the root when it changes), never beta's.
    done = ctl(daemon.home, "yank", "alpha", "1.0", "--reason", "broken")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: "data-yanked" in (tree / "simple/alpha/index.html").read_text())
    assert get(f"{nginx.url}/pypi/alpha/1.0/json").json()["info"]["yanked"] is True
    assert beta_page.stat().st_mtime_ns == before

    # A removal takes the project out of the root first, then its pages, then its files.
    done = ctl(daemon.home, "remove", "alpha", "1.0", "--yes")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: not (tree / "files" / "alpha").exists())
    # Only the record of the removal stays (for a restore); no front serves it.
    assert wait_for(
        lambda: [p.name for p in (tree / "simple" / "alpha").iterdir()] == ["insiders-project.json"]
    )
    assert not (tree / "pypi" / "alpha").exists()
    assert "alpha" not in (tree / "simple" / "index.html").read_text()
    assert beta_page.stat().st_mtime_ns == before
    # Not hosted any more: insidersd sends it upstream.
    assert get(f"{nginx.url}/simple/alpha/").headers["location"].endswith("/upstream/simple/alpha/")


def _links(page: dict[str, object]) -> list[tuple[str, str, str | None]]:
    files = page["files"]
    assert isinstance(files, list)
    return [
        (f["url"], f["hashes"]["sha256"], (f.get("core-metadata") or {}).get("sha256"))
        for f in files
    ]


def test_readers_never_see_a_broken_link_while_uploads_run(tmp_path: Path) -> None:
    """Readers walk root -> project pages -> files through nginx while uploads run; every link
    they see resolves, and every file and metadata file has the hash its page gives.

    Their nginx is the shipped front on a machine that cannot reach insidersd (its address is a
    closed port), as a web server fed by a synced directory would be: nothing a reader gets can
    come from the daemon's own fallback, so only the tree is tested.
    """
    tree = tmp_path / "mirror"
    daemon = mirrored_daemon(tmp_path / "daemon", tree)
    port = free_port()
    site = front_site(tree, f"127.0.0.1:{free_port()}", port)
    nginx = Nginx(tmp_path / "nginx", site, port=port).start()
    projects = [f"busy-{i}" for i in range(4)]
    uploads = [(name, f"0.{v}") for v in range(15) for name in projects]
    stop = threading.Event()
    problems: list[str] = []
    checked = [0]
    walks = [0, 0, 0]  # whole walks root -> pages -> files done by each reader

    def reader(number: int) -> None:
        with httpx.Client(base_url=nginx.url, timeout=30) as client:
            while not stop.is_set():
                root = client.get("/simple/", headers={"Accept": PIP_ACCEPT})
                if root.status_code != 200:
                    continue  # the first comparison has not written the root yet
                for project in root.json()["projects"]:
                    name = project["name"]
                    base = f"{nginx.url}/simple/{name}/"
                    response = client.get(f"/simple/{name}/", headers={"Accept": PIP_ACCEPT})
                    if response.status_code != 200:
                        problems.append(f"root lists {name}, its page is {response.status_code}")
                        continue
                    for url, sha256, metadata_sha256 in _links(response.json()):
                        got = client.get(urljoin(base, url))
                        if got.status_code != 200:
                            problems.append(f"{url}: {got.status_code}")
                        elif hashlib.sha256(got.content).hexdigest() != sha256:
                            problems.append(f"{url}: its bytes differ from the page's hash")
                        if metadata_sha256 is not None:
                            meta = client.get(urljoin(base, url) + ".metadata")
                            if hashlib.sha256(meta.content).hexdigest() != metadata_sha256:
                                problems.append(f"{url}.metadata: {meta.status_code}, hash")
                        checked[0] += 1
                walks[number] += 1

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(len(walks))]
    for thread in threads:
        thread.start()
    try:
        for name, version in uploads:
            daemon.upload_wheel(tmp_path, name, version, version.encode() * 500)
        last = uploads[-1]
        assert wait_for(lambda: mirrored(tree, last[0], wheel_filename(*last)))
        # The readers walk the final state too: each finishes the walk it is in, then a whole one.
        final = list(walks)
        assert wait_for(lambda: all(w >= f + 2 for w, f in zip(walks, final, strict=True)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        nginx.stop()
        daemon.stop()
    assert not problems, problems[:10]
    assert checked[0] > len(uploads)
    # Every upload ended up in the tree.
    for name in projects:
        files = {
            f["filename"]
            for f in json.loads((tree / "simple" / name / "index.json").read_bytes())["files"]
        }
        assert files == {wheel_filename(name, v) for n, v in uploads if n == name}


def is_current(home: Path) -> bool:
    """Whether every mirror of the daemon shows the store: nothing pending, a sync done."""
    answer = ctl(home, "--json", "mirrors", "list")
    assert answer.returncode == 0, answer.stderr
    return all(
        m["state"] == "idle" and not m["pending"] and not m["full_sync_pending"] and m["last_sync"]
        for m in json.loads(answer.stdout)["mirrors"]
    )


def _tree_matches_daemon(tree: Path, daemon: Daemon) -> None:
    """Every hosted file is in the tree with its bytes, and the pages are the daemon's own."""
    with daemon.client() as client:
        root = client.get("/simple/", headers={"Accept": PIP_ACCEPT})
        assert (tree / "simple" / "index.json").read_bytes() == root.content
        for project in root.json()["projects"]:
            name = re.sub(r"[-_.]+", "-", project["name"]).lower()
            for accept, page in [(PIP_ACCEPT, "index.json"), ("text/html", "index.html")]:
                served = client.get(f"/simple/{name}/", headers={"Accept": accept}).content
                assert (tree / "simple" / name / page).read_bytes() == served
            for url, sha256, _ in _links(
                client.get(f"/simple/{name}/", headers={"Accept": PIP_ACCEPT}).json()
            ):
                held = (tree / "simple" / name / url).resolve()
                assert hashlib.sha256(held.read_bytes()).hexdigest() == sha256


def test_kill_during_mirroring_then_restart_converges(tmp_path: Path) -> None:
    home, tree = tmp_path / "daemon", tmp_path / "mirror"
    # A store of 150 files, mirrored nowhere yet.
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    for index in range(150):
        name = f"bulk-{index % 10}"
        daemon.upload_wheel(tmp_path, name, f"1.{index}", b"z" * 20000)
    daemon.stop()

    # The mirror starts, and the daemon is killed while it copies.
    daemon = mirrored_daemon(home, tree)
    assert wait_for(lambda: (tree / "files").exists() and any((tree / "files").rglob("*.whl")))
    daemon.stop(signal.SIGKILL)

    # Damage of every kind: a torn file, a half-written temp file, a lost page; and a file
    # nobody wrote (no manifest names it), which is not the daemon's to delete.
    some = next(tree.rglob("*.whl"))
    some.write_bytes(some.read_bytes()[:100])
    (tree / "files" / "gone-project").mkdir(parents=True)
    (tree / "files" / "gone-project" / "gone-1.0-py3-none-any.whl").write_bytes(b"stale")
    (some.parent / ".insiders-tmp-abc").write_bytes(b"half")

    daemon = mirrored_daemon(home, tree)
    try:
        assert wait_for(lambda: is_current(home)), ctl(home, "mirrors", "list")
        _tree_matches_daemon(tree, daemon)
        assert (tree / "files" / "gone-project" / "gone-1.0-py3-none-any.whl").exists()
        assert not list(tree.rglob(".insiders-tmp-*"))
        assert len(list(tree.rglob("*.whl"))) == 150 + 1  # the stray stays

        # A page lost behind the daemon's back: `mirrors sync` compares and writes it again.
        shutil.rmtree(tree / "simple" / "bulk-3")
        synced = ctl(home, "mirrors", "sync", "web")
        assert synced.returncode == 0, synced.stderr
        assert "is current" in synced.stdout
        _tree_matches_daemon(tree, daemon)
    finally:
        daemon.stop()


def test_a_broken_target_slows_nothing_and_catches_up(tmp_path: Path) -> None:
    home = tmp_path / "daemon"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the mirror's parent should be")
    tree = blocker / "mirror"
    daemon = mirrored_daemon(home, tree)
    try:
        path = daemon.upload_wheel(tmp_path, "steady", "1.0")
        with daemon.client() as client:
            assert client.get("/simple/steady/").status_code == 200

        listing = wait_for(lambda: "failing" in (r := ctl(home, "mirrors", "list")).stdout and r)
        assert listing, ctl(home, "mirrors", "list")
        assert "Not a directory" in listing.stderr  # the last error, on stderr
        status = ctl(home, "status")
        assert "web" in status.stdout
        assert "failing" in status.stdout
        as_json = json.loads(ctl(home, "--json", "mirrors", "list").stdout)
        (mirror,) = as_json["mirrors"]
        assert mirror["state"] == "failing"
        assert mirror["pending"] >= 1 or mirror["full_sync_pending"]
        assert "Not a directory" in mirror["last_error"]
        refused = ctl(home, "mirrors", "sync", "web")
        assert refused.returncode == 1
        assert "Not a directory" in refused.stderr

        # The target comes back: a sync catches up.
        blocker.unlink()
        synced = ctl(home, "mirrors", "sync", "web")
        assert synced.returncode == 0, synced.stderr
        assert mirrored(tree, "steady", path.name)

        # A failure in the middle of copying files (the tree is there, files/ is not a
        # directory) is a failure of the target too: the daemon keeps serving and retrying.
        shutil.rmtree(tree / "files")
        (tree / "files").write_text("in the way")
        path = daemon.upload_wheel(tmp_path, "steady", "1.1")
        refused = ctl(home, "mirrors", "sync", "web")
        assert refused.returncode == 1
        assert "Not a directory" in refused.stderr
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        with daemon.client() as client:
            assert client.get("/simple/steady/").status_code == 200

        # The target comes back: the next attempt (or a sync) catches up.
        (tree / "files").unlink()
        synced = ctl(home, "mirrors", "sync", "web")
        assert synced.returncode == 0, synced.stderr
        assert mirrored(tree, "steady", path.name)
        after = json.loads(ctl(home, "--json", "mirrors", "list").stdout)["mirrors"][0]
        assert after["state"] == "idle"
        assert after["last_error"] is None
        assert ctl(home, "mirrors", "sync", "nowhere").returncode == 1
    finally:
        daemon.stop()


def test_front_with_read_tokens_asks_insidersd(
    dists: dict[str, list[Path]], tmp_path: Path
) -> None:
    """[server] read-access = "token": nginx serves the tree only to requests insidersd accepts
    (auth_request to GET /-/auth: 204 or 401), and pip installs with a read token."""
    home, tree = tmp_path / "daemon", tmp_path / "mirror"
    write_config(home, f'[server]\nread-access = "token"\n\n[mirrors.web]\ndirectory = "{tree}"\n')
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    port = free_port()
    nginx = Nginx(
        tmp_path / "nginx", front_site(tree, daemon.url, port, read_tokens=True), port=port
    ).start()
    try:
        created = ctl(home, "tokens", "create", "reader", "--scope", "read")
        assert created.returncode == 0, created.stderr
        reader = created.stdout.strip()
        twine_upload(daemon.url, daemon.token, dists["demo-1.0"], tmp_path)
        wheel = next(p for p in dists["demo-1.0"] if p.suffix == ".whl")
        assert wait_for(lambda: mirrored(tree, "demo-pkg", wheel.name))

        with daemon.client() as client:
            assert client.get("/-/auth").status_code == 401
            assert client.get("/-/auth", auth=("__token__", reader)).status_code == 204
        for path in ("/simple/", "/simple/demo-pkg/", f"/files/demo-pkg/{wheel.name}"):
            refused = get(f"{nginx.url}{path}")
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert get(f"{nginx.url}{path}", auth=("__token__", "wrong")).status_code == 401
            assert get(f"{nginx.url}{path}", auth=("__token__", reader)).status_code == 200
        authenticated = f"http://__token__:{reader}@127.0.0.1:{port}/simple/"
        pip_install(authenticated, tmp_path / "pip", "demo-pkg")
        assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"
    finally:
        nginx.stop()
        daemon.stop()


def test_front_negotiates_as_the_daemon_does(
    front: tuple[Daemon, Nginx, Path], tmp_path: Path
) -> None:
    """Issue 21, item 8: `?format=`, q values and the HTML charset, through the shipped front,
    each answer the daemon's own (status, content type and bytes)."""
    daemon, nginx, tree = front
    path = daemon.upload_wheel(tmp_path, "negotiated", "1.0")
    assert wait_for(lambda: mirrored(tree, "negotiated", path.name))
    for page in ("/simple/", "/simple/negotiated/"):
        for query, accept in NEGOTIATED:
            through = answer(f"{nginx.url}{page}", query, accept)
            direct = answer(f"{daemon.url}{page}", query, accept)
            assert through == direct, (page, query, accept, through[:2], direct[:2])
    html = answer(f"{nginx.url}/simple/negotiated/", "", "text/html")
    assert html[1] == "text/html; charset=utf-8"
    # nginx answered from the tree (a static file has a Last-Modified; insidersd's pages do not)
    # for all but what only insidersd can rank (both below q=1) and the two 406s.
    from_tree = []
    for query, accept in NEGOTIATED:
        headers = {} if accept is None else {"Accept": accept}
        url = f"{nginx.url}/simple/negotiated/{'?' + query if query else ''}"
        if "last-modified" in get(url, headers=headers).headers:
            from_tree.append((query, accept))
    assert len(from_tree) == len(NEGOTIATED) - 3, set(NEGOTIATED) - set(from_tree)


def test_front_documents_use_the_public_url(tmp_path: Path) -> None:
    """Issue 21, item 8: the /pypi documents the front serves from the tree are the daemon's own,
    absolute URLs from [server] public-url included; a changed public-url rewrites them."""
    home, tree = tmp_path / "daemon", tmp_path / "mirror"
    port = free_port()
    public = f"http://127.0.0.1:{port}/"
    write_config(
        home, f'[server]\npublic-url = "{public}"\n\n[mirrors.web]\ndirectory = "{tree}"\n'
    )
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    nginx = Nginx(tmp_path / "nginx", front_site(tree, daemon.url, port), port=port).start()
    try:
        path = daemon.upload_wheel(tmp_path, "documented", "1.0")
        assert wait_for(lambda: mirrored(tree, "documented", path.name))
        for url in ("/pypi/documented/json", "/pypi/documented/1.0/json"):
            through = get(f"{nginx.url}{url}")
            assert "last-modified" in through.headers  # from the tree
            assert through.json() == get(f"{daemon.url}{url}").json(), url
            file_url = through.json()["urls"][0]["url"]
            assert file_url == f"{public}files/documented/{path.name}"
            assert get(file_url).content == path.read_bytes()
    finally:
        nginx.stop()
        daemon.stop()

    # Another public-url: the next start writes every document again.
    other = "https://packages.example.internal/"
    write_config(home, f'[server]\npublic-url = "{other}"\n\n[mirrors.web]\ndirectory = "{tree}"\n')
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    try:
        assert ctl(home, "mirrors", "sync", "web").returncode == 0
        document = json.loads((tree / "pypi" / "documented" / "json").read_bytes())
        assert document["urls"][0]["url"] == f"{other}files/documented/{path.name}"
    finally:
        daemon.stop()
