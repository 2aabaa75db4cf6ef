"""Cache mode: the upstream's files go through the index once, verified, and stay for later.

The upstream is a static PEP 691 tree behind a real nginx (tests.static_upstream), whose access
log counts what the daemon fetched; the daemons, pip and uv are real.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from insiders.index.filecache import FileCache
from tests.faults.places import silent_server, tmpfs
from tests.fronts import Nginx, ctl, free_port, front_site, uv_install, write_config
from tests.static_upstream import StaticUpstream
from tests.support import Daemon, make_wheel, pip_install, wheel_filename

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[StaticUpstream]:
    server = StaticUpstream(tmp_path / "upstream").start()
    yield server
    server.stop()


def caching(home: Path, upstream: StaticUpstream, config: str = "") -> Daemon:
    write_config(home, config)
    return Daemon(home, ["--upstream", upstream.index, "--upstream-mode", "cache"]).start()


def cached_files(
    daemon: Daemon, until: Callable[[dict[str, int]], bool] = lambda files: True
) -> dict[str, int]:
    """What the file cache holds: NAME/FILENAME -> bytes; once `until` holds of it (or after
    10 s): a file is kept (fsynced, renamed into place) after its last byte went out."""
    root = daemon.home / "cache" / "insiders" / "upstream-files"
    deadline = time.monotonic() + 10
    while True:
        found = {
            f"{p.parent.name}/{p.name.rpartition('.')[0]}": p.stat().st_size
            for p in (root.glob("*/*") if root.exists() else ())
            if not p.name.startswith(".")
        }
        if until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def stopped(daemon: Daemon) -> None:
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()


@contextlib.contextmanager
def restarted_without(upstream: StaticUpstream, daemon: Daemon) -> Iterator[None]:
    """The upstream stopped, and the (stopped) `daemon` started again with every page it keeps
    stale at once: what it serves now, it serves from its cache. Stopped at the end."""
    upstream.stop()
    write_config(daemon.home, "[upstream]\ncache-ttl = 0.001\n")
    daemon.start()
    try:
        yield
    finally:
        stopped(daemon)


def test_cold_install_fills_the_cache_and_a_warm_one_needs_no_upstream(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]]
) -> None:
    paths = [upstream.add_dist(p) for p in dists["other-0.1"] + dists["demo-1.1"]]
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            page = client.get("/simple/other-pkg/", headers={"Accept": JSON}).json()
        assert all(f["url"].startswith("../../files/other-pkg/") for f in page["files"])
        pip_install(daemon.index, tmp_path / "pip-cold", "other-pkg", "demo-pkg")
        uv_install(daemon.index, tmp_path / "uv-cold", "other-pkg", "demo-pkg")
        wheels = [p for p in dists["other-0.1"] + dists["demo-1.1"] if p.suffix == ".whl"]
        held = cached_files(daemon, lambda files: len(files) >= 2 * len(wheels))
        for wheel in wheels:
            name = "other-pkg" if wheel.name.startswith("other") else "demo-pkg"
            assert held[f"{name}/{wheel.name}"] == wheel.stat().st_size
            assert f"{name}/{wheel.name}.metadata" in held  # pip read PEP 658 metadata
        # Two installers, one fetch of each file from the upstream.
        assert all(upstream.requests(p) <= 1 for p in paths)
        assert sum(upstream.requests(p) for p in paths) == len(wheels)
    finally:
        stopped(daemon)

    # The upstream goes away; a restarted daemon (nothing in memory, every page stale) installs
    # everything it cached, and fails fast, naming the upstream, for what it did not.
    with restarted_without(upstream, daemon):
        pip_install(daemon.index, tmp_path / "pip-warm", "other-pkg", "demo-pkg")
        uv_install(daemon.index, tmp_path / "uv-warm", "other-pkg", "demo-pkg")
        sdist = next(p for p in dists["other-0.1"] if p.name.endswith(".tar.gz"))
        started = time.monotonic()
        with daemon.client() as client:
            never = client.get("/simple/never-fetched/")
            not_cached = client.get(f"/files/other-pkg/{sdist.name}")
        assert time.monotonic() - started < 5
        assert never.status_code == 502
        assert upstream.index in never.text
        assert "failed" in never.text
        assert not_cached.status_code == 502  # the sdist: pip and uv took the wheel
        assert "127.0.0.1" in not_cached.text
        assert "failed" in not_cached.text


def test_other_bytes_than_announced_are_never_cached_and_the_download_fails(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    # Larger than a chunk: most of it has reached the client when the digest is known.
    good = make_wheel("bad-pkg", "1.0", b"the bytes the page announces" * 40_000)
    evil = make_wheel("bad-pkg", "1.0", b"other bytes, as many of them" * 40_000)
    filename = wheel_filename("bad-pkg", "1.0")
    path = upstream.add("bad-pkg", filename, evil, announce=good)
    daemon = caching(tmp_path / "local", upstream)
    try:
        for _ in range(2):
            with httpx.stream("GET", f"{daemon.url}/files/bad-pkg/{filename}") as response:
                assert response.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    response.read()
        assert upstream.requests(path) == 2  # nothing kept: each request asked again
        assert cached_files(daemon) == {}
        result = subprocess.run(
            [*pip_argv(daemon, tmp_path / "pip"), "bad-pkg"], capture_output=True, text=True
        )
        assert result.returncode != 0
        assert cached_files(daemon) == {}
        assert "sent other bytes than its page announced" in daemon.log()
    finally:
        stopped(daemon)


def test_other_metadata_than_announced_is_refused(tmp_path: Path, upstream: StaticUpstream) -> None:
    wheel = make_wheel("meta-pkg", "1.0")
    filename = wheel_filename("meta-pkg", "1.0")
    upstream.add("meta-pkg", filename, wheel, metadata=b"Metadata-Version: 2.1\nName: other\n")
    # The page announces another metadata file's digest than the one served.
    entry = upstream.files["meta-pkg"][0]
    entry["core-metadata"] = {"sha256": hashlib.sha256(b"not this").hexdigest()}
    upstream.add("meta-pkg", "placeholder-1.0.tar.gz", b"x")  # rewrites the page
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            # Smaller than a chunk: refused before any byte went out.
            response = client.get(f"/files/meta-pkg/{filename}.metadata")
        assert response.status_code == 502
        assert "other bytes than its page announced" in response.text
        assert cached_files(daemon) == {}
    finally:
        stopped(daemon)


def pip_argv(daemon: Daemon, target: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
        "--index-url", daemon.index, "--target", str(target),
    ]  # fmt: skip


def test_concurrent_requests_for_a_file_make_one_upstream_request(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    data = make_wheel("slow-pkg", "1.0", bytes(range(256)) * 2048)  # ~512 kB: ~2 s upstream
    filename = wheel_filename("slow-pkg", "1.0")
    path = upstream.add("slow-pkg", filename, data)
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:  # the page first: only the file's flight is measured
            assert client.get("/simple/slow-pkg/").status_code == 200

        def fetch(_: int) -> bytes:
            with httpx.Client(base_url=daemon.url, timeout=60) as client:
                response = client.get(f"/files/slow-pkg/{filename}")
                assert response.status_code == 200
                return response.content

        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(fetch, range(8)))
        assert all(body == data for body in bodies)
        assert upstream.requests(path) == 1
    finally:
        stopped(daemon)


def test_least_recently_used_files_go_beyond_the_file_cache_size(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    names = ["lru-a", "lru-b", "lru-c"]
    wheels = {n: make_wheel(n, "1.0", n.encode() * 40_000) for n in names}
    paths = {n: upstream.add(n, wheel_filename(n, "1.0"), wheels[n]) for n in names}
    size = max(len(w) for w in wheels.values())
    limit = size * 5 // 2
    daemon = caching(tmp_path / "local", upstream, f"[upstream]\nfile-cache-size = {limit}\n")
    try:
        with daemon.client() as client:

            def get(name: str) -> None:
                response = client.get(paths[name])
                assert response.status_code == 200
                assert response.content == wheels[name]
                # Kept just after the answer: the order of use is the order they were kept.
                kept = f"{name}/{wheel_filename(name, '1.0')}"
                cached_files(daemon, lambda files: kept in files)

            get("lru-a")
            get("lru-b")
            get("lru-a")  # a hit: now lru-b is the least recently used
            get("lru-c")
            expected = {
                f"lru-a/{wheel_filename('lru-a', '1.0')}",
                f"lru-c/{wheel_filename('lru-c', '1.0')}",
            }
            assert set(cached_files(daemon, lambda files: set(files) == expected)) == expected
            assert sum(cached_files(daemon).values()) <= limit
            get("lru-b")  # fetched again
        assert upstream.requests(paths["lru-a"]) == 1
        assert upstream.requests(paths["lru-b"]) == 2
    finally:
        stopped(daemon)


def test_a_hosted_project_shadows_its_cached_files_at_once(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]]
) -> None:
    for path in dists["demo-1.1"]:
        upstream.add_dist(path)
    daemon = caching(tmp_path / "local", upstream)
    cached = next(p for p in dists["demo-1.1"] if p.suffix == ".whl")
    try:
        with daemon.client() as client:
            assert client.get(f"/files/demo-pkg/{cached.name}").status_code == 200
            assert f"demo-pkg/{cached.name}" in cached_files(
                daemon, lambda files: f"demo-pkg/{cached.name}" in files
            )
            for path in dists["demo-1.0"]:
                assert daemon.upload(path).status_code == 200
            page = client.get("/simple/demo-pkg/", headers={"Accept": JSON}).json()
            assert {f["filename"] for f in page["files"]} == {p.name for p in dists["demo-1.0"]}
            shadowed = client.get(f"/files/demo-pkg/{cached.name}")
            assert shadowed.status_code == 404
            assert client.get(f"/files/demo-pkg/{cached.name}.metadata").status_code == 404
        # And the copies it no longer serves go (at the file cache's next use).
        assert json.loads(ok(daemon, "cache", "status", "--json"))["files"] == 0
        assert cached_files(daemon) == {}
    finally:
        stopped(daemon)


def test_read_tokens_gate_cached_files_as_hosted_ones(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    data = make_wheel("gated-pkg", "1.0", b"private" * 1000)
    path = upstream.add("gated-pkg", wheel_filename("gated-pkg", "1.0"), data)
    daemon = caching(tmp_path / "local", upstream, '[server]\nread-access = "token"\n')
    try:
        created = ctl(daemon.home, "tokens", "create", "reader", "--scope", "read")
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip()
        with daemon.client() as client:
            for _ in range(2):  # cold, then warm
                assert client.get(path).status_code == 401
                assert client.get(path, auth=("__token__", "wrong")).status_code == 401
                good = client.get(path, auth=("__token__", secret))
                assert good.status_code == 200
                assert good.content == data
        assert upstream.requests(path) == 1
    finally:
        stopped(daemon)


def test_a_cached_file_answers_etag_head_and_range(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    data = make_wheel("range-pkg", "1.0", bytes(range(256)) * 100)
    path = upstream.add("range-pkg", wheel_filename("range-pkg", "1.0"), data)
    digest = hashlib.sha256(data).hexdigest()
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            assert client.get(path).content == data
            head = client.head(path)
            assert head.status_code == 200
            assert head.headers["content-length"] == str(len(data))
            assert head.headers["etag"] == f'"{digest}"'
            assert client.get(path, headers={"If-None-Match": f'"{digest}"'}).status_code == 304
            part = client.get(path, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206
            assert part.content == data[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
            tail = client.get(path, headers={"Range": "bytes=-10"})
            assert tail.content == data[-10:]
            beyond = client.get(path, headers={"Range": f"bytes={len(data)}-"})
            assert beyond.status_code == 416
            # Behind the front, but kept privately: nginx could not read it, the daemon sends it.
            private = client.get(path, headers={"X-Insiders-Accel": "/-/upstream-files/"})
            assert private.content == data
            assert "x-accel-redirect" not in private.headers
        assert upstream.requests(path) == 1
    finally:
        stopped(daemon)


def test_a_head_or_range_of_a_file_not_cached_yet_is_answered_at_once(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """An installer reads a wheel's metadata with a HEAD and ranges (uv does when the page
    announces no metadata file), then downloads the wheel. The HEAD is answered from the size
    the page announces and the range relayed from the upstream, neither waiting for the whole
    file; the download then fetches it, checked, once."""
    data = make_wheel("range-cold", "1.0", bytes(range(256)) * 2048)
    path = upstream.add("range-cold", wheel_filename("range-cold", "1.0"), data)
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            head = client.head(path)
            assert head.status_code == 200
            assert head.headers["accept-ranges"] == "bytes"
            assert head.headers["content-length"] == str(len(data))
            tail = client.get(path, headers={"Range": "bytes=-22"})
            assert tail.status_code == 206
            assert tail.content == data[-22:]
            size = len(data)
            assert tail.headers["content-range"] == f"bytes {size - 22}-{size - 1}/{size}"
            assert "etag" not in tail.headers  # relayed, not checked: nothing claims it is the file
            assert upstream.requests(path, 200) == 0  # the whole file was not waited for
            assert client.get(path).content == data
        held = cached_files(daemon, lambda files: len(files) == 1)
        assert held == {f"range-cold/{Path(path).name}": len(data)}
        assert upstream.requests(path, 200) == 1  # the whole file, once
        assert upstream.requests(path, 206) == 1  # the range, relayed
        # uv itself, on a page without metadata files: its ranges relayed, the wheel once.
        wheel = make_wheel("lazy-pkg", "1.0", os.urandom(200_000))
        lazy = upstream.add("lazy-pkg", wheel_filename("lazy-pkg", "1.0"), wheel)
        uv_install(daemon.index, tmp_path / "uv", "lazy-pkg")
        assert (tmp_path / "uv" / "lazy_pkg" / "data.bin").exists()
        assert upstream.requests(lazy, 206) >= 1
        assert upstream.requests(lazy, 200) == 1
    finally:
        stopped(daemon)


def test_without_ranges_or_a_size_upstream_a_part_is_answered_from_the_checked_file(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """An upstream that ignores ranges would send its whole unchecked file to a range: the
    answer waits for the file, checked, and is then the range; a page without sizes (PEP 503
    HTML has none) the same for a HEAD."""
    data = make_wheel("norange-pkg", "1.0", bytes(range(256)) * 100)
    path = upstream.add("norange-pkg", wheel_filename("norange-pkg", "1.0"), data)
    sizeless = make_wheel("sizeless-pkg", "1.0", b"sizeless" * 1000)
    sizeless_path = upstream.add(
        "sizeless-pkg", wheel_filename("sizeless-pkg", "1.0"), sizeless, size=False
    )
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            tail = client.get(path, headers={"Range": "bytes=-22"})
            assert tail.status_code == 206
            assert tail.content == data[-22:]
            assert tail.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
            head = client.head(sizeless_path)
            assert head.status_code == 200
            assert head.headers["content-length"] == str(len(sizeless))
            assert head.headers["etag"] == f'"{hashlib.sha256(sizeless).hexdigest()}"'
        assert upstream.requests(path) == 2  # the range it ignored, then the whole file
        assert upstream.requests(sizeless_path) == 1
    finally:
        stopped(daemon)


def test_a_range_from_a_hostile_upstream_is_relayed_never_kept(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """A range relayed is the upstream's bytes, as redirect mode would give them, and is never
    kept: the whole file still fails its check, so nothing is kept and a download of it fails.
    A file of another size than its page announces gets no range relayed at all."""
    good = make_wheel("bad-range", "1.0", b"the bytes the page announces" * 40_000)
    flipped = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # the same size, other bytes
    filename = wheel_filename("bad-range", "1.0")
    path = upstream.add("bad-range", filename, flipped, announce=good)
    larger = make_wheel("bad-size", "1.0", os.urandom(len(good)))
    larger_path = upstream.add("bad-size", wheel_filename("bad-size", "1.0"), larger, announce=good)
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            part = client.get(path, headers={"Range": "bytes=0-199"})
            assert (part.status_code, part.content) == (206, flipped[:200])
            refused = client.get(larger_path, headers={"Range": "bytes=0-199"})
            assert refused.status_code == 502
            assert "other bytes than its page announced" in refused.text
        with (
            httpx.stream("GET", f"{daemon.url}{path}") as response,
            pytest.raises(httpx.RemoteProtocolError),
        ):
            response.read()
        assert cached_files(daemon) == {}
        assert upstream.requests(path, 206) == 1
    finally:
        stopped(daemon)


def test_nothing_is_written_for_a_name_or_file_the_upstream_does_not_know(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    known = make_wheel("known-pkg", "1.0")
    upstream.add("known-pkg", wheel_filename("known-pkg", "1.0"), known)
    # A hostile page: a file named to climb out of the cache, and one no filename can be.
    for hostile in ("../../escape-1.0-py3-none-any.whl", "..", "a b.whl"):
        upstream.files["known-pkg"].append(
            {
                "filename": hostile,
                "url": f"../../files/known-pkg/{wheel_filename('known-pkg', '1.0')}",
                "hashes": {"sha256": hashlib.sha256(known).hexdigest()},
            }
        )
    upstream.add("known-pkg", "known_pkg-1.0.tar.gz", b"sdist")  # writes the page
    daemon = caching(tmp_path / "local", upstream)
    try:
        with daemon.client() as client:
            assert (
                client.get("/files/no-such-pkg/no_such_pkg-1.0-py3-none-any.whl").status_code == 404
            )
            assert client.get("/files/known-pkg/known_pkg-9.0-py3-none-any.whl").status_code == 404
            page = client.get("/simple/known-pkg/", headers={"Accept": JSON}).json()
            assert {f["filename"] for f in page["files"]} == {
                wheel_filename("known-pkg", "1.0"),
                "known_pkg-1.0.tar.gz",
            }
            for hostile in ("..", "a b.whl", "..%2F..%2Fescape-1.0-py3-none-any.whl"):
                assert client.get(f"/files/known-pkg/{hostile}").status_code == 404
        root = daemon.home / "cache" / "insiders" / "upstream-files"
        assert not root.exists() or list(root.iterdir()) == []
        assert not (daemon.home / "cache" / "insiders" / "upstream" / "no-such-pkg.json").exists()
    finally:
        stopped(daemon)


def test_cache_status_and_prune(tmp_path: Path, upstream: StaticUpstream) -> None:
    wheels = {n: make_wheel(n, "1.0", n.encode() * 1000) for n in ("keep-pkg", "drop-pkg")}
    paths = {n: upstream.add(n, wheel_filename(n, "1.0"), w) for n, w in wheels.items()}
    daemon = caching(tmp_path / "local", upstream)
    try:
        empty = json.loads(ok(daemon, "cache", "status", "--json"))
        assert (empty["files"], empty["size"], empty["oldest"]) == (0, 0, None)
        with daemon.client() as client:
            for path in [*paths.values(), paths["keep-pkg"]]:
                assert client.get(path).status_code == 200
                # Kept just after the answer; the third request must find it kept (a hit).
                cached_files(daemon, lambda files, path=path: path.removeprefix("/files/") in files)
        report = json.loads(ok(daemon, "cache", "status", "--json"))
        assert report["mode"] == "cache"
        assert report["files"] == 2
        assert report["size"] == sum(len(w) for w in wheels.values())
        assert (report["hits"], report["misses"]) == (1, 2)
        assert report["now"] - 60 < report["oldest"] <= report["now"]
        text = ok(daemon, "cache", "status")
        assert "33% of 3 requests" in text
        assert "oldest" in text
        assert "0 files dropped" in ok(daemon, "cache", "prune", "--older-than", "1h")
        assert "1 file dropped" in ok(daemon, "cache", "prune", "Drop_Pkg")
        assert set(cached_files(daemon)) == {f"keep-pkg/{wheel_filename('keep-pkg', '1.0')}"}
        assert "1 file dropped" in ok(daemon, "cache", "prune")
        assert cached_files(daemon) == {}
        bad = ctl(daemon.home, "cache", "prune", "--older-than", "soon")
        assert bad.returncode == 2
        assert "--older-than" in bad.stderr
    finally:
        stopped(daemon)


def ok(daemon: Daemon, *args: str) -> str:
    result = ctl(daemon.home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_hung_upstream_costs_one_timeout_then_the_cache_answers_at_once(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]]
) -> None:
    """An upstream that accepts connections and never answers (a hung host, a black hole): the
    first request waits for the timeout; for a while after, pages come from their copies and
    what is not cached fails at once, naming the upstream and the failure."""
    for path in dists["other-0.1"] + dists["demo-1.1"]:
        upstream.add_dist(path)
    daemon = caching(tmp_path / "local", upstream)
    try:
        pip_install(daemon.index, tmp_path / "cold", "other-pkg", "demo-pkg")
    finally:
        stopped(daemon)
    with silent_server() as (hung, _):
        write_config(daemon.home, "[upstream]\ncache-ttl = 0.001\ntimeout = 3\n")
        daemon.args = ["--upstream", f"{hung}/simple/", "--upstream-mode", "cache"]
        daemon.start()
        try:
            with daemon.client() as client:
                started = time.monotonic()
                first = client.get("/simple/other-pkg/", headers={"Accept": JSON})
                assert first.status_code == 200
                assert time.monotonic() - started >= 3  # the timeout, once
                started = time.monotonic()
                assert client.get("/simple/demo-pkg/").status_code == 200
                never = client.get("/simple/never-fetched/")
                assert time.monotonic() - started < 1.5
            assert never.status_code == 502
            assert hung in never.text
            assert "failed" in never.text
            pip_install(daemon.index, tmp_path / "warm", "other-pkg", "demo-pkg")
        finally:
            stopped(daemon)


def test_one_request_that_times_out_fails_alone_while_the_upstream_answers(
    tmp_path: Path,
) -> None:
    """One stalled request (a proxy's hiccup, one slow backend) is not a down upstream: it fails
    alone, and a page never fetched before is still fetched right after. (Taken as down, every
    request of an install failed for 10 s.)"""
    with silent_server() as (hung, _):
        upstream = StaticUpstream(tmp_path / "upstream", hung=hung).start()
        try:
            upstream.add(
                "alive-pkg", wheel_filename("alive-pkg", "1.0"), make_wheel("alive-pkg", "1.0")
            )
            upstream.add(
                "later-pkg", wheel_filename("later-pkg", "1.0"), make_wheel("later-pkg", "1.0")
            )
            config = "[upstream]\ntimeout = 2\ncache-ttl = 0.001\n"
            daemon = caching(tmp_path / "local", upstream, config)
            try:
                with ThreadPoolExecutor(1) as pool, daemon.client() as client:
                    stalled = pool.submit(httpx.get, f"{daemon.url}/simple/hung-pkg/", timeout=30)
                    while not stalled.done():  # each a fetch: the pages are stale at once
                        assert client.get("/simple/alive-pkg/").status_code == 200
                        time.sleep(0.1)
                    later = client.get("/simple/later-pkg/")
                assert stalled.result().status_code == 502
                assert "ReadTimeout" in stalled.result().text
                assert later.status_code == 200
            finally:
                stopped(daemon)
        finally:
            upstream.stop()


def test_the_nginx_front_sends_cached_files_itself(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """Behind the shipped front, a cached file costs the daemon an empty answer: nginx sends the
    bytes from the file cache's directory (X-Accel-Redirect), Range included."""
    shared = tmp_path / "upstream-files"
    shared.mkdir(mode=0o755)
    data = make_wheel("front-pkg", "1.0", bytes(range(256)) * 400)
    metadata = b"Metadata-Version: 2.1\nName: front-pkg\nVersion: 1.0\n\n"
    path = upstream.add("front-pkg", wheel_filename("front-pkg", "1.0"), data, metadata=metadata)
    config = f'[upstream]\nfile-cache-directory = "{shared}"\n'
    daemon = caching(tmp_path / "local", upstream, config)
    (tmp_path / "mirror").mkdir()
    port = free_port()
    site = front_site(tmp_path / "mirror", daemon.url, port, upstream_files=shared)
    nginx = Nginx(tmp_path / "nginx", site, port=port).start()
    try:
        with httpx.Client(base_url=nginx.url, timeout=30) as client:
            cold = client.get(path)
            assert cold.status_code == 200
            assert cold.content == data
            assert client.get(f"{path}.metadata").content == metadata
            # What the daemon answers the front for a cached file: no body, a name.
            with daemon.client() as direct:
                answer = direct.get(path, headers={"X-Insiders-Accel": "/-/upstream-files/"})
            assert answer.content == b""
            location = answer.headers["x-accel-redirect"]
            digest = hashlib.sha256(data).hexdigest()
            assert location == f"/-/upstream-files/front-pkg/{Path(path).name}.{digest}"
            assert (shared / location.removeprefix("/-/upstream-files/")).read_bytes() == data
            # Through the front: nginx's own answer (its ETag, its Range), the same bytes.
            warm = client.get(path)
            assert warm.status_code == 200
            assert warm.content == data
            assert warm.headers["etag"] != f'"{digest}"'
            assert warm.headers["content-type"] == "application/octet-stream"
            meta = client.get(f"{path}.metadata")
            assert meta.content == metadata
            assert meta.headers["content-type"].startswith("text/plain")
            part = client.get(path, headers={"Range": "bytes=10-19"})
            assert part.status_code == 206
            assert part.content == data[10:20]
        assert upstream.requests(path) == 1
        modes = {p.stat().st_mode & 0o777 for p in shared.rglob("*")}
        assert modes == {0o755, 0o644}
    finally:
        nginx.stop()
        stopped(daemon)


def test_cache_fetch_fills_the_cache_for_installs_without_the_upstream(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]]
) -> None:
    for path in dists["demo-1.0"] + dists["demo-1.1"] + dists["other-0.1"]:
        upstream.add_dist(path)
    for platform in ("manylinux_2_17_x86_64", "win_amd64", "macosx_11_0_arm64"):
        filename = f"plat_pkg-1.0-cp312-cp312-{platform}.whl"
        upstream.add("plat-pkg", filename, platform.encode())
    requirements = tmp_path / "requirements.txt"
    (tmp_path / "more.txt").write_text("other-pkg  # a comment\n")
    requirements.write_text(
        "# pinned, as uv pip compile writes them\n"
        "demo-pkg==1.0.0 \\\n    --hash=sha256:0000\n"
        "-r more.txt\n"
    )
    daemon = caching(tmp_path / "local", upstream)
    try:
        fetched = ok(daemon, "cache", "fetch", "-r", str(requirements))
        assert "6 files fetched" in fetched  # two releases: sdist, wheel and its metadata each
        demo = {p.name for p in dists["demo-1.0"]}
        assert {k.split("/")[1] for k in cached_files(daemon) if k.startswith("demo-pkg/")} == {
            *demo,
            *(f"{n}.metadata" for n in demo if n.endswith(".whl")),
        }
        again = ok(daemon, "cache", "fetch", "-r", str(requirements))
        assert "0 files fetched" in again
        assert "6 there already" in again
        ok(daemon, "cache", "fetch", "plat-pkg", "--platform", "win_amd64")
        assert {k for k in cached_files(daemon) if k.startswith("plat-pkg/")} == {
            "plat-pkg/plat_pkg-1.0-cp312-cp312-win_amd64.whl"
        }
        missing = ctl(daemon.home, "cache", "fetch", "no-such-pkg", "demo-pkg>=9")
        assert missing.returncode == 1
        assert "no-such-pkg: no such project upstream" in missing.stderr
        assert "demo-pkg>=9: no release upstream matches" in missing.stderr
    finally:
        stopped(daemon)
    with restarted_without(upstream, daemon):
        pip_install(daemon.index, tmp_path / "offline", "demo-pkg==1.0.0", "other-pkg")


def test_a_client_that_leaves_mid_download_leaves_a_complete_cached_file(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """The first client's download feeds the cache: when it goes away, the fetch goes on, and
    the next client gets the file from the cache (one upstream request in all); HEAD on a file
    not cached yet fetches it too."""
    data = make_wheel("slow-gone", "1.0", bytes(range(256)) * 2048)  # ~2 s upstream
    filename = wheel_filename("slow-gone", "1.0")
    path = upstream.add("slow-gone", filename, data)
    other = make_wheel("head-pkg", "1.0", b"head" * 1000)
    head_path = upstream.add("head-pkg", wheel_filename("head-pkg", "1.0"), other)
    daemon = caching(tmp_path / "local", upstream)
    try:
        with httpx.stream("GET", f"{daemon.url}{path}", timeout=30) as response:
            assert response.status_code == 200
            next(response.iter_raw())
        with daemon.client() as client:
            assert client.get(path).content == data
            head = client.head(head_path)
            assert head.status_code == 200
            assert head.headers["content-length"] == str(len(other))
            assert client.get(head_path).content == other
        assert upstream.requests(path) == 1
        assert upstream.requests(head_path) == 1
    finally:
        stopped(daemon)


def test_a_full_cache_disk_still_serves_the_file_checked(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """The cache is a help, not a condition: a file the full disk cannot hold still reaches the
    client whole (and its sha256 still checked), is not kept, and the daemon goes on."""
    big = make_wheel("big-pkg", "1.0", os.urandom(3 << 20))
    big_path = upstream.add("big-pkg", wheel_filename("big-pkg", "1.0"), big)
    small = make_wheel("small-pkg", "1.0", b"small" * 100)
    small_path = upstream.add("small-pkg", wheel_filename("small-pkg", "1.0"), small)
    with tmpfs(tmp_path / "files", "1m") as files:
        daemon = caching(
            tmp_path / "local", upstream, f'[upstream]\nfile-cache-directory = "{files}"\n'
        )
        try:
            with daemon.client() as client:
                for _ in range(2):
                    response = client.get(big_path)
                    assert response.status_code == 200
                    assert response.content == big
                head = client.head(big_path)  # answered from the page
                assert head.status_code == 200
                assert head.headers["content-length"] == str(len(big))
                assert client.get(small_path).content == small
            assert upstream.requests(big_path) == 2
            assert "cannot write the file cache" in daemon.log()
            expected = [f"{wheel_filename('small-pkg', '1.0')}.{hashlib.sha256(small).hexdigest()}"]
            deadline = time.monotonic() + 10  # kept after its last byte went out
            while [p.name for p in files.glob("*/*")] != expected:
                assert time.monotonic() < deadline, list(files.glob("*/*"))
                time.sleep(0.02)
        finally:
            stopped(daemon)


def test_the_file_cache_reads_its_order_back_from_the_files_and_drops_crash_leftovers(
    tmp_path: Path,
) -> None:
    """After a restart the least recently used go first still (the files' times), and the temp
    files a crash left behind are removed; a name that became hosted loses its files."""
    cache = FileCache(tmp_path / "files", 3000)
    for n, name in enumerate(("a", "b", "c")):
        fd, temp = cache.temp_file(name)
        os.write(fd, bytes(1000))
        os.close(fd)
        digest = hashlib.sha256(bytes(1000)).hexdigest()
        assert cache.keep(name, f"{name}.whl", temp, digest) is not None
        os.utime(cache.path(cache.peek(name, f"{name}.whl")), (1000 + n, 1000 + n))  # type: ignore[arg-type]
    os.utime(cache.path(cache.peek("a", "a.whl")), (2000, 2000))  # type: ignore[arg-type]  # a hit
    leftover = cache.temp_file("b")
    os.close(leftover[0])

    again = FileCache(tmp_path / "files", 3000)
    assert again.usage().files == 3
    assert not leftover[1].exists()
    fd, temp = again.temp_file("d")
    os.close(fd)
    digest = hashlib.sha256(b"").hexdigest()
    again.keep("d", "d.whl", temp, digest)  # 0 bytes: nothing to evict
    fd, temp = again.temp_file("e")
    os.write(fd, bytes(10))
    os.close(fd)
    again.keep("e", "e.whl", temp, hashlib.sha256(bytes(10)).hexdigest())
    assert again.peek("b", "b.whl") is None  # the oldest went
    assert again.peek("a", "a.whl") is not None
    again.drop_later("c")
    assert again.usage().files == 3  # a, d, e
    assert not (tmp_path / "files" / "c").exists()


def test_merge_in_cache_mode_lists_the_upstream_files_after_the_hosted_ones(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]]
) -> None:
    """A merged project stays hosted: its own files from the store, the upstream's listed after
    them with the upstream's URLs (not cached: /files/ of a hosted name is the store's)."""
    for path in dists["demo-1.1"]:
        upstream.add_dist(path)
    config = '[projects.demo-pkg]\nupstream = "merge"\n'
    daemon = caching(tmp_path / "local", upstream, config)
    try:
        for path in dists["demo-1.0"]:
            assert daemon.upload(path).status_code == 200
        with daemon.client() as client:
            page = client.get("/simple/demo-pkg/", headers={"Accept": JSON}).json()
        urls = {f["filename"]: f["url"] for f in page["files"]}
        assert set(urls) == {p.name for p in dists["demo-1.0"] + dists["demo-1.1"]}
        assert all(
            urls[p.name].startswith(upstream.index[: -len("simple/")]) for p in dists["demo-1.1"]
        )
        pip_install(daemon.index, tmp_path / "pip", "demo-pkg")
        assert cached_files(daemon) == {}
    finally:
        stopped(daemon)


def test_the_front_sends_cached_files_only_to_readers(
    tmp_path: Path, upstream: StaticUpstream
) -> None:
    """With read tokens, a cached file through the front is refused without one, cold and warm
    (the daemon's gate answers before it names the file to nginx)."""
    shared = tmp_path / "upstream-files"
    shared.mkdir(mode=0o755)
    data = make_wheel("front-gated", "1.0", b"gated" * 5000)
    path = upstream.add("front-gated", wheel_filename("front-gated", "1.0"), data)
    config = f'[server]\nread-access = "token"\n[upstream]\nfile-cache-directory = "{shared}"\n'
    daemon = caching(tmp_path / "local", upstream, config)
    (tmp_path / "mirror").mkdir()
    port = free_port()
    site = front_site(
        tmp_path / "mirror", daemon.url, port, read_tokens=True, upstream_files=shared
    )
    nginx = Nginx(tmp_path / "nginx", site, port=port).start()
    try:
        secret = ctl(daemon.home, "tokens", "create", "reader", "--scope", "read").stdout.strip()
        with httpx.Client(base_url=nginx.url, timeout=30) as client:
            etags = []
            for _ in range(2):  # cold, then warm (sent by nginx)
                assert client.get(path).status_code == 401
                good = client.get(path, auth=("__token__", secret))
                assert good.status_code == 200
                assert good.content == data
                etags.append(good.headers["etag"])
        # The daemon's ETag is the sha256; nginx's, when it sent the file, is its own.
        assert etags[0] == f'"{hashlib.sha256(data).hexdigest()}"' != etags[1]
        assert upstream.requests(path) == 1
    finally:
        nginx.stop()
        stopped(daemon)


def test_pages_link_files_absolutely_under_the_public_url(
    tmp_path: Path, upstream: StaticUpstream, dists: dict[str, list[Path]], old_pip: Path
) -> None:
    """With `[server] public-url`, a cached page's files are absolute URLs under it (pip takes
    an absolute http(s) link as it is, a relative one it resolves with urljoin: on an upstream
    page of thousands of files, that is most of what pip does with it); pip, old and new,
    installs through them, and the files still come from the cache."""
    paths = [upstream.add_dist(p) for p in dists["other-0.1"]]
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    write_config(tmp_path / "local", f'[server]\npublic-url = "{base}"\n')
    daemon = Daemon(
        tmp_path / "local", ["--upstream", upstream.index, "--upstream-mode", "cache"]
    ).start(port=port)
    try:
        with daemon.client() as client:
            page = client.get("/simple/other-pkg/", headers={"Accept": JSON}).json()
            html = client.get("/simple/other-pkg/", headers={"Accept": "text/html"}).text
        urls = [f["url"] for f in page["files"]]
        assert urls
        assert all(u.startswith(f"{base}files/other-pkg/") for u in urls)
        assert all(f'href="{u}#sha256=' in html for u in urls)
        pip_install(daemon.index, tmp_path / "pip", "other-pkg")
        done = subprocess.run(
            [str(old_pip), "-m", "pip", "install", "--isolated", "--no-cache-dir", "--index-url",
             daemon.index, "--target", str(tmp_path / "old-pip"), "other-pkg"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert list((tmp_path / "old-pip").glob("other_pkg-0.1.dist-info"))
        wheel = next(p for p in dists["other-0.1"] if p.suffix == ".whl")
        assert f"other-pkg/{wheel.name}" in cached_files(daemon)
        assert sum(upstream.requests(p) for p in paths) == 1  # the wheel, once for both
    finally:
        stopped(daemon)
