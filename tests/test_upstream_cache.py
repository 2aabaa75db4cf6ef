"""The upstream's pages cost bounded memory and disk, however many names anyone asks for.

The upstream here is a real HTTP server speaking PEP 691 (a few lines, so that it can count what
it is asked and change its mind); the daemons are real.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.faults.places import JSON, http_server, json_page, send_body
from tests.support import Daemon, run_ctl
from tests.test_archive_bombs import memory_kib

FILES_PER_PAGE = 3000  # about 500 kB of JSON: a big project's page on a public index


class Upstream:
    """Knows every name starting with `big-`, and the names added to `known`; counts requests."""

    def __init__(self) -> None:
        self.asked: collections.Counter[str] = collections.Counter()
        self.known: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.strip("/").split("/")[-1]
        with self.lock:
            self.asked[name] += 1
        if not (name.startswith("big-") or name in self.known):
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        files = [
            (
                f"{name.replace('-', '_')}-{n}.0-py3-none-any.whl",
                f"https://files.example.invalid/{name}/{n}.whl",
                f"{n:064x}",
            )
            for n in range(FILES_PER_PAGE if name.startswith("big-") else 1)
        ]
        send_body(handler, json_page(name, files))


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    behaviour = Upstream()
    with http_server(behaviour) as url:
        yield behaviour, f"{url}/simple/"


def start(tmp_path: Path, upstream_url: str, config: str = "", *args: str) -> Daemon:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.toml").write_text(config)
    return Daemon(
        tmp_path / "d",
        ["--config", str(tmp_path / "config.toml"), "--upstream", upstream_url, *args],
    ).start()


def cached_pages(
    daemon: Daemon, until: Callable[[dict[str, int]], bool] = lambda pages: True
) -> dict[str, int]:
    """The upstream pages the daemon keeps on disk: name -> bytes; once `until` holds of them
    (or after 10 s): a page's copy is written after the page was answered."""
    directory = daemon.home / "cache" / "insiders" / "upstream"
    deadline = time.monotonic() + 10
    while True:
        found = {
            p.name.removesuffix(".json"): p.stat().st_size
            for p in (directory.glob("*.json") if directory.exists() else ())
            if not p.name.startswith(".")
        }
        if until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_redirect_mode_keeps_no_page_and_asks_once_per_name(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    """The web pages' 404 says whether the upstream has the project: that takes its status, not
    a copy of its page (200 such requests wrote 97 MB into the cache)."""
    behaviour, url = upstream
    daemon = start(tmp_path, url)
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            for n in range(200):
                page = client.get(f"/project/big-{n}/")
                assert page.status_code == 404
                assert "upstream" in page.text.lower()
            for _ in range(100):
                assert client.get("/project/not-there/").status_code == 404
        assert cached_pages(daemon) == {}
        assert behaviour.asked["not-there"] == 1
        assert all(behaviour.asked[f"big-{n}"] == 1 for n in range(200))
    finally:
        daemon.stop()


def test_proxy_mode_keeps_at_most_cache_size_bytes_least_recently_used_first(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    behaviour, url = upstream
    daemon = start(tmp_path, url, "", "--upstream-mode", "proxy")
    try:
        with httpx.Client(base_url=daemon.url, timeout=30, headers={"Accept": JSON}) as client:
            # What one page's copy weighs; then room for two and a half of them.
            assert client.get("/simple/big-0/").status_code == 200
            limit = int(cached_pages(daemon, lambda pages: "big-0" in pages)["big-0"] * 2.5)
            (tmp_path / "config.toml").write_text(f"[upstream]\ncache-size = {limit}\n")
            ctl(daemon, "reload")
            for name in ("big-1", "big-2"):
                assert client.get(f"/simple/{name}/").status_code == 200
            expected = {"big-1", "big-2"}
            assert set(cached_pages(daemon, lambda pages: set(pages) == expected)) == expected
            # big-1 is served again (from memory): now big-2 is the least recently used.
            assert client.get("/simple/big-1/").status_code == 200
            assert client.get("/simple/big-3/").status_code == 200
            expected = {"big-1", "big-3"}
            assert set(cached_pages(daemon, lambda pages: set(pages) == expected)) == expected
            for n in range(4, 30):
                assert client.get(f"/simple/big-{n}/").status_code == 200
        assert sum(cached_pages(daemon, lambda pages: "big-29" in pages).values()) <= limit
        assert behaviour.asked["big-1"] == 1
    finally:
        daemon.stop()


def ctl(daemon: Daemon, *args: str) -> None:
    run_ctl(daemon, *args, timeout=30, check=True)


def test_a_name_the_upstream_does_not_know_is_asked_again_soon_and_never_written(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    behaviour, url = upstream
    config = "[upstream]\ncache-ttl = 600\nnegative-ttl = 0.5\n"
    daemon = start(tmp_path, url, config, "--upstream-mode", "proxy")
    try:
        with httpx.Client(base_url=daemon.url, timeout=30, headers={"Accept": JSON}) as client:
            for _ in range(20):
                assert client.get("/simple/late/").status_code == 404
            assert behaviour.asked["late"] == 1
            assert cached_pages(daemon) == {}
            behaviour.known.add("late")  # published upstream
            asked = time.monotonic()
            time.sleep(0.6)  # the negative TTL: time itself is what the daemon waits for
            assert time.monotonic() - asked > 0.5
            response = client.get("/simple/late/")
            assert response.status_code == 200, response.text
            assert set(cached_pages(daemon, lambda pages: "late" in pages)) == {"late"}
    finally:
        daemon.stop()


def test_proxy_mode_memory_is_bounded(tmp_path: Path, upstream: tuple[Upstream, str]) -> None:
    """120 big pages (3,000 files each) asked for in turn: the daemon's memory stays within
    100 MB of what it was (a count of 512 pages bounded nothing: about 3 MB each, parsed and
    rendered)."""
    _behaviour, url = upstream
    daemon = start(tmp_path, url, "", "--upstream-mode", "proxy")
    try:
        before = memory_kib(daemon, "VmRSS")
        with httpx.Client(base_url=daemon.url, timeout=60) as client:
            for n in range(120):
                accept = JSON if n % 2 else "text/html"
                response = client.get(f"/simple/big-{n}/", headers={"Accept": accept})
                assert response.status_code == 200
        assert memory_kib(daemon, "VmRSS") - before < 100 << 10
    finally:
        daemon.stop()


def test_a_proxied_page_is_rendered_once_per_fetch_and_sent_to_any_client(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    """The rendering of a page is kept gzipped, by the time of the fetch it was made from: 40
    big pages (more than the parsed pages' memory holds) asked for twice are fetched once each,
    and a client that takes no gzip gets the same page as one that does."""
    behaviour, url = upstream
    daemon = start(tmp_path, url, "", "--upstream-mode", "proxy")
    try:
        with httpx.Client(base_url=daemon.url, timeout=60) as client:
            first = {}
            for _ in range(2):
                for n in range(40):
                    response = client.get(f"/simple/big-{n}/", headers={"Accept": JSON})
                    assert response.status_code == 200
                    assert response.headers["content-encoding"] == "gzip"
                    first.setdefault(n, response.json())
                    assert response.json() == first[n]
            plain = client.get(
                "/simple/big-3/", headers={"Accept": JSON, "Accept-Encoding": "identity"}
            )
            assert "content-encoding" not in plain.headers
            assert int(plain.headers["content-length"]) == len(plain.content)
            assert json.loads(plain.content) == first[3]
        assert all(behaviour.asked[f"big-{n}"] == 1 for n in range(40)), behaviour.asked
    finally:
        daemon.stop()


# -- the caches themselves (pure, and a real directory) -------------------------------------


def test_the_lru_counts_weights_and_evicts_the_least_recently_used() -> None:
    from insiders.index.pagecache import LRU

    cache: LRU[str, str] = LRU(10)
    cache.put("a", "A", 4)
    cache.put("b", "B", 4)
    assert cache.get("a") == "A"  # a is now the newest
    cache.put("c", "C", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    cache.put("huge", "H", 11)  # heavier than the whole limit: not kept, nothing evicted
    assert cache.get("huge") is None
    assert cache.weight == 8


def test_disk_pages_start_from_the_files_times_and_stay_within_the_limit(tmp_path: Path) -> None:
    from insiders.index.pagecache import DiskPages

    for age, name in enumerate(["old", "middle", "new"]):
        (tmp_path / f"{name}.json").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{name}.json", (1000 + age, 1000 + age))
    pages = DiskPages(tmp_path, 350)
    assert pages.load("old") == b"x" * 100  # used: now the newest
    pages.save("fresh", b"y" * 100)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["fresh", "new", "old"]
    pages.save("too-big", b"z" * 351)
    assert not (tmp_path / "too-big.json").exists()
    pages.drop("old")
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["fresh", "new"]


def test_a_project_gone_upstream_leaves_no_copy(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    behaviour, url = upstream
    behaviour.known.add("gone")
    config = "[upstream]\ncache-ttl = 0.5\nnegative-ttl = 0.5\n"
    daemon = start(tmp_path, url, config, "--upstream-mode", "proxy")
    try:
        with httpx.Client(base_url=daemon.url, timeout=30, headers={"Accept": JSON}) as client:
            assert client.get("/simple/gone/").status_code == 200
            assert set(cached_pages(daemon, lambda pages: "gone" in pages)) == {"gone"}
            behaviour.known.discard("gone")  # removed upstream
            time.sleep(0.6)  # the TTL: time itself is what the daemon waits for
            assert client.get("/simple/gone/").status_code == 404
        assert cached_pages(daemon, lambda pages: not pages) == {}
        assert behaviour.asked["gone"] == 2
    finally:
        daemon.stop()


def test_one_dropped_answer_does_not_take_the_upstream_down(tmp_path: Path) -> None:
    """An upstream that closes one connection without answering (a reset, a proxy's hiccup):
    that request fails, naming it, and the next names are asked as usual. Only an upstream that
    cannot be reached or does not answer in time is taken as down for a while (DOWN_FOR), when
    what has no copy fails at once."""
    dropped: list[str] = []

    def behave(handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.strip("/").split("/")[-1]
        if name == "flaky" and not dropped:
            dropped.append(name)
            handler.close_connection = True
            handler.connection.shutdown(2)  # no status line at all
            return
        files = [
            (f"{name}-1.0-py3-none-any.whl", f"https://files.example.invalid/{name}.whl", "0" * 64)
        ]
        send_body(handler, json_page(name, files))

    with http_server(behave) as url:
        daemon = start(tmp_path, f"{url}/simple/", "", "--upstream-mode", "proxy")
        try:
            with daemon.client() as client:
                first = client.get("/simple/flaky/")
                assert first.status_code == 502
                assert "failed" in first.text
                assert client.get("/simple/steady/").status_code == 200
                assert client.get("/simple/flaky/").status_code == 200
        finally:
            daemon.stop()
