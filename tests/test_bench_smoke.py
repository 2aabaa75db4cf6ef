"""The benchmark's smoke mode, so it does not rot: a tiny store, insidersd and the ASGI ceiling,
a second of load each, the real clients, the watcher over 3 repositories and one new tag; plus its
pure parts (wrk's output, the report).

The benchmark proper (`make bench`) is not a test: it takes many minutes and needs the peers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from insiders_bench import report  # noqa: E402
from insiders_bench.dataset import Sizes, generate, make_sdist, make_wheel  # noqa: E402
from insiders_bench.load import parse_wrk  # noqa: E402
from insiders_bench.measure import summarise_profile  # noqa: E402

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:4000/simple/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    33.81ms    5.02ms  81.47ms   90.12%
    Req/Sec     0.95k    80.12     1.10k    70.00%
  Latency Distribution
     50%   32.85ms
     75%   34.12ms
     90%   37.03ms
     99%    1.02s
  9462 requests in 5.01s, 51.42MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1888.62
Transfer/sec:     10.26MB
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.rps == pytest.approx(1888.62)
    assert result.p50_ms == pytest.approx(32.85)
    assert result.p99_ms == pytest.approx(1020.0)
    assert result.requests == 9462
    assert result.errors == 4 + 2  # read errors are closed keep-alive connections, not failures


def test_summarise_profile() -> None:
    collapsed = (
        "main (insiders/__main__.py:90);run (trio/_core/_run.py:1);send (a/server.py:3) 3\n"
        "main (insiders/__main__.py:90);run (trio/_core/_run.py:1) 1\n"
    )
    summary = summarise_profile(collapsed)
    assert summary["samples"] == 4
    assert summary["self"][0] == ("send (a/server.py)", 75.0)
    assert ("main (insiders/__main__.py)", 100.0) in summary["inclusive"]


def test_synthetic_distributions_are_valid(tmp_path: Path) -> None:
    from insiders.distributions import inspect
    from insiders.names import parse_dist_filename
    from insiders.store import Store

    for filename, content in (make_wheel("bench-x", "1.2.3"), make_sdist("bench-x", "1.2.3")):
        path = tmp_path / filename
        path.write_bytes(content)
        meta = inspect(path, parse_dist_filename(filename))
        assert (meta.name, meta.version) == ("bench-x", "1.2.3")
    dataset = generate(tmp_path / "data", Sizes(projects=3, versions=2, big_versions=5), log=False)
    store = Store.open(dataset.store)
    assert store.file_count() == dataset.files == 2 * (3 * 2 + 5)
    assert len(list(dataset.flat.iterdir())) == dataset.files
    assert (dataset.devpi_export / "dataindex.json").is_file()


def _leftovers(marker: str) -> list[str]:
    """Processes whose environment says a benchmark run with this work directory started them."""
    found = []
    wanted = f"INSIDERS_BENCH_RUN={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if wanted in environ:
            found.append(f"{entry}: {cmdline.decode(errors='replace')}")
    return found


def test_smoke_run(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    argv = [
        sys.executable,
        str(BENCH / "run.py"),
        "--servers",
        "insidersd,hypercorn-min",
        "--projects",
        "4",
        "--versions",
        "2",
        "--big-versions",
        "30",
        "--duration",
        "1",
        "--repeats",
        "1",
        "--client-repeats",
        "1",
        "--connections",
        "8",
        "--upload-mb",
        "2",
        "--crowd-clients",
        "20",
        "--crowd-seconds",
        "2",
        "--watcher-repos",
        "3",
        "--watcher-cycles",
        "1",
        "--watcher-tags",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        "--results-dir",
        str(results_dir),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "targets:" in done.stdout
    (written,) = results_dir.glob("*.json")
    results = json.loads(written.read_text())
    assert results["machine"]["cores"] == os.cpu_count()
    assert set(results["servers"]) == {"insidersd", "hypercorn-min"}, results["skipped"]
    ours = results["servers"]["insidersd"]
    for key in ("root", "project_html", "project_json", "big", "file"):
        figures = ours["endpoints"][key]
        assert figures["rps"] > 0, key
        assert figures["errors"] == 0, key
    assert ours["endpoints"]["project_json"]["json"] is True
    for key in ("web_home", "web_big"):
        assert ours["web"][key]["rps"] > 0, key
        assert ours["web"][key]["errors"] == 0, key
    assert "2,000-version web page" in done.stdout
    assert ours["start_s"] > 0
    assert ours["rss_start_mb"] > 0
    assert ours["pip_download_s"] > 0
    assert ours["uv_install_s"] > 0
    assert ours["upload"]["size_mb"] == pytest.approx(2, abs=0.1)
    # The load check: installers while uploads run, every install checked, no error.
    crowd = ours["crowd"]
    assert crowd["clients"] == 20
    assert crowd["installs"] > 0
    assert crowd["uploads"] > 0
    assert (crowd["errors"], crowd["upload_errors"]) == (0, 0), crowd["first_errors"]
    assert crowd["install_p99_ms"] > 0
    assert crowd["rss_peak_mb"] >= crowd["rss_before_mb"] > 0
    assert "load check: 20 installers" in done.stdout
    assert {t["target"] for t in results["targets"]} >= {"insidersctl status wall time"}
    # The watcher: a check cycle over 3 repositories, one new tag built and installable.
    watcher = ours["watcher"]
    assert "error" not in watcher, watcher
    assert watcher["repos"] == 3
    assert watcher["cycle_s"] > 0
    assert watcher["tags"] == 1
    assert watcher["tag_total_s"] > watcher["stages_ms"]["building"] / 1e3 > 0
    assert watcher["build_s"] > 0
    for stage in ("listing", "fetching", "publishing"):
        assert watcher["stages_ms"][stage] >= 0, stage
    assert "watcher: check cycle, 3 repos, no new tags (s)" in done.stdout
    # The table and the comparison render from the file as written.
    assert "insidersd" in report.table(results)
    assert "compared with" in report.compare(results, results)
    # Every process it started is gone, and the upload did not stay in the generated store.
    assert _leftovers(str(tmp_path / "work")) == []
    (store,) = (tmp_path / "work").glob("*/store/packages")
    assert not (store / "benchpkg-upload").exists()


def test_smoke_run_mirror_front(tmp_path: Path) -> None:
    """The front's figures (through Debian's nginx in front of insidersd and its directory
    mirror), the full copy to SeaweedFS and the lag burst, on a tiny store. (Plain nginx is left
    out: its workers could not read a generated tree under pytest's private temp directory.)"""
    results_dir = tmp_path / "results"
    argv = [
        sys.executable, str(BENCH / "run.py"), "--servers", "insidersd-front",
        "--projects", "3", "--versions", "2", "--big-versions", "20", "--duration", "1",
        "--repeats", "1", "--client-repeats", "1", "--connections", "8", "--upload-mb", "0",
        "--watcher-repos", "0", "--mirror-uploads", "20", "--work-dir", str(tmp_path / "work"),
        "--results-dir", str(results_dir),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = results_dir.glob("*.json")
    results = json.loads(written.read_text())
    assert set(results["servers"]) == {"insidersd-front"}, results["skipped"]
    front = results["servers"]["insidersd-front"]
    for key in ("root", "project_html", "project_json", "big", "file"):
        assert front["endpoints"][key]["rps"] > 0, key
        assert front["endpoints"][key]["errors"] == 0, key
    assert front["endpoints"]["project_json"]["json"] is True
    assert front["mirror_dir_s"] > 0
    # Every file and its metadata, the pages, the documents: more operations than files.
    assert front["mirror_dir_requests"] > 2 * results["dataset"]["files"]
    mirror = front["mirror"]
    assert "error" not in mirror, mirror
    assert mirror["s3"]["requests"] > 2 * results["dataset"]["files"]
    assert mirror["burst"]["uploads"] == 20
    assert mirror["burst"]["missing"] == 0
    assert mirror["burst"]["lag_p99_ms"] >= mirror["burst"]["lag_p50_ms"] >= 0
    names = {t["target"] for t in results["targets"]}
    assert any(n.startswith("insidersd-front file download") for n in names)
    assert "mirror lag during 20 uploads: p99 (ms)" in done.stdout
    assert _leftovers(str(tmp_path / "work")) == []


def test_bench_has_no_import_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's modules import in one direction (base.py at the bottom), as the daemon's."""
    from tests import shape

    monkeypatch.setitem(shape.PACKAGES, "insiders_bench", BENCH / "insiders_bench")
    assert shape.circles(shape.graph("insiders_bench")) == []


def test_scale_curve_and_targets() -> None:
    """The scaling report: ratios between sizes, the issue's targets, what is not tried next."""
    from insiders_bench import scale

    def size(files: int, ready: float, rss: float, p99: float) -> dict[str, object]:
        return {
            "files": files,
            "ready_s": ready,
            "rss_idle_mb": rss,
            "upload": {"page_p50_ms": p99 / 2, "page_p99_ms": p99},
            "mirror": {"dir_copy": {"finished": True, "seconds": 40.0, "requests": 10}},
        }

    results = {"sizes": {"100k": size(100_000, 1.0, 100, 10), "1M": size(1_000_000, 12, 900, 30)}}
    text = scale.table(results)
    assert "x12.00" in text
    assert "x9.00" in text
    assert "1M/100k (files x10)" in text
    verdicts = {name: verdict for name, _, verdict in scale.targets(results)}
    assert verdicts["start to READY under 10 s"] == "FAIL"
    assert verdicts["idle RSS under 1 GB"] == "PASS"
    assert (
        verdicts["start to READY, median of 3 (s): at most linear 100k -> 1M"] == "PASS"
    )  # x12 <= x10 +20%
    skip = scale.next_skips(results["sizes"]["100k"]["mirror"], 100_000, 1_000_000, 300, "100k")
    assert "400 s at this size if linear" in skip["dir_copy"]
    assert "did not finish" in skip["dir_restore"]


def test_scale_daemon_figures(tmp_path: Path) -> None:
    """One size of the scaling benchmark on a tiny store: READY, RSS, ctl, uploads, pages; and
    the cached store is as generated afterwards."""
    from insiders_bench import scale

    from insiders.store import Store

    dataset = generate(
        tmp_path / "data", Sizes(projects=3, versions=2, big_versions=5), log=False, store_only=True
    )
    assert not (dataset.root / "flat").exists()
    options = scale.ScaleOptions(sizes=[], uploads=2, log=lambda line: None)
    figures = scale.measure_daemon(dataset, tmp_path / "scratch", options)
    assert 0 < figures["ready_s"] <= figures["first_200_s"] + 1
    assert figures["rss_idle_mb"] > 10
    assert figures["rss_pages_mb"] > 10
    assert figures["status_ms"] > 0
    assert figures["projects_show_ms"] > 0
    assert figures["upload"]["uploads"] == 2
    assert figures["upload"]["root_p99_ms"] >= 0
    assert Store.open(dataset.store).file_count() == dataset.files


def test_rate_per_tenth_from_each_item() -> None:
    """A copy's or a restore's tenths come from every item's own time: a constant rate gives 1.0
    whatever the step's length; a step that slows down shows it, first quarter to last."""
    from insiders_bench import scale

    steady = [100.0 + i / 500 for i in range(10_000)]
    rates = scale.item_windows(steady)
    assert rates is not None
    assert len(rates) == scale.WINDOWS
    assert scale.window_spread(rates) == pytest.approx(1.0, abs=0.01)
    assert rates[0] == pytest.approx(500, rel=0.01)
    slowing = [t + (i / 2000) ** 2 for i, t in enumerate(steady)]
    assert scale.window_spread(scale.item_windows(slowing)) > 2
    assert scale.times_drift(slowing) < 0.5
    assert scale.item_windows(steady[:5]) is None


def test_scale_mirror_steps(tmp_path: Path) -> None:
    """The scaling benchmark's mirror steps on a tiny store, the bucket left out: the copy to a
    directory with its lag, the restore from it; each with its rate per tenth and the load
    average beside it, and SeaweedFS started as one of the benchmark's own processes."""
    from insiders_bench import mirror, procs, scale

    sizes = Sizes(projects=6, versions=2, big_versions=20)
    dataset = generate(tmp_path / "data", sizes, log=False, store_only=True)
    options = scale.ScaleOptions(sizes=[], burst=8, log=lambda line: None)
    skip = {"s3_copy": "not in the smoke test"}
    figures = scale.measure_mirror(dataset, tmp_path / "scratch", options, skip)
    copy, restored = figures["dir_copy"], figures["dir_restore"]
    assert copy["finished"], figures
    assert restored["finished"], figures
    assert copy["requests"] > 2 * dataset.files
    assert len(copy["windows"]) == scale.WINDOWS
    assert restored["files"] == dataset.files + 8  # the burst's uploads are in the mirror too
    assert len(restored["windows"]) == scale.WINDOWS
    assert all(len(step["loadavg"]) == 2 for step in (copy, restored))
    assert figures["lag"]["uploads"] == 8

    weed, server = mirror.start_seaweedfs(tmp_path / "weed")
    try:
        assert server in procs._running
        assert weed.client().list_buckets()["Buckets"] == []
    finally:
        server.stop()
    assert not server.alive()
    assert server not in procs._running


def test_upstream_cache_rows_on_a_local_upstream(tmp_path: Path) -> None:
    """The upstream-cache rows (`--upstream-cache`) end to end, uv and pip, one round, with a
    local upstream (insidersd hosting a tiny generated store) in place of the public one: the
    daemons reach it through the round's relay, which is then stopped for the last row."""
    import shutil
    import tempfile

    from insiders_bench import upstreamcache
    from insiders_bench.base import insidersd_argv, isolated_env
    from insiders_bench.dataset import project_names, versions_of
    from insiders_bench.procs import Server, free_port, stop_all, wait_serving

    sizes = Sizes(projects=3, versions=2, big_versions=2)
    dataset = generate(tmp_path / "data", sizes, log=False, store_only=True)
    requirements = tmp_path / "requirements.txt"
    pins = [f"{name}=={versions_of(sizes.versions)[-1]}" for name in project_names(sizes)[:2]]
    requirements.write_text("# two hosted upstream\n" + "\n".join(pins) + "\n")
    port = free_port()
    home = tmp_path / "upstream"
    (home / "run" / "insiders").mkdir(parents=True)
    upstream = Server(
        "upstream",
        insidersd_argv(port, dataset.store, home),
        log=home / "log",
        env=isolated_env(home),
    )
    # nginx's workers must reach the front's files: not under pytest's private directory.
    scratch = Path(tempfile.mkdtemp(prefix="insiders-upstream-smoke-"))
    lines: list[str] = []
    try:
        wait_serving(upstream, port, "/simple/", timeout=60)
        options = upstreamcache.UpstreamOptions(
            upstream=f"http://127.0.0.1:{port}/simple/",
            requirements=requirements,
            rounds=1,
            log=lines.append,
        )
        figures = upstreamcache.measure_upstream_cache(scratch, options)
    finally:
        stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    assert figures["requirements"]["distributions"] == 2
    for client in ("uv", "pip"):
        rows = figures["rows"][client]
        for mode in upstreamcache.MODES:
            assert (rows[mode]["ok"], rows[mode]["runs"]) == (1, 1), (client, mode, rows[mode])
            assert rows[mode]["median_s"] > 0
        # The daemon's fetches went through the relay; unplugged, nothing came from upstream.
        assert rows["cold"]["upstream_bytes"] > 0
        assert rows["warm"]["upstream_bytes"] == 0
        assert rows["unplugged"]["upstream_bytes"] == 0
    assert figures["unplugged_upstream_errors"] > 0, "\n".join(lines)
    text = upstreamcache.summary(
        {"timestamp": "now", "machine": {"cores": 2}, "upstream_cache": figures}
    )
    assert "targets:" in text
    assert "cache warm, upstream unplugged" in text
