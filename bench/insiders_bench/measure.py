"""Measuring one server: start-up, memory, the loaded endpoints, the real clients."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from . import clients
from .base import PEERS_BIN, Running
from .crowd import CROWD_PROJECT, run_crowd
from .dataset import Dataset, project_names, write_big_wheel
from .load import ACCEPT_JSON, LoadResult, median_result, run_wrk
from .procs import Server, group_pids, http_get, wait_idle, wait_serving
from .servers import Kind

UPLOAD_PROJECT = "benchpkg-upload"


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    json: bool = False


ENDPOINTS = (
    Endpoint("root", "root index /simple/"),
    Endpoint("project_html", "project page, HTML"),
    Endpoint("project_json", "project page, JSON", json=True),
    Endpoint("big", "2,000-version page"),
    Endpoint("file", "file download (wheel)"),
)


@dataclass
class Options:
    duration: float = 5.0
    repeats: int = 3
    threads: int = 2
    connections: int = 64
    client_repeats: int = 3
    upload_mb: int = 200
    #: the load check: installers at once (0 skips it), and for how long
    crowd_clients: int = 200
    crowd_seconds: float = 20.0
    profile_seconds: float = 0.0
    profile_endpoint: str = "project_html"
    #: a server run beside insidersd, loaded right before it in every repeat, so the target
    #: ratios compare figures taken under the same background load (other processes)
    pair_with: Kind | None = None
    #: where py-spy's raw stacks are kept (flamegraph.pl or speedscope read them)
    profile_out: Path | None = None
    start_timeout: float = 600.0
    log: Callable[[str], None] = print


@dataclass
class Figures:
    setup: str
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _paths(running: Running, dataset: Dataset) -> dict[str, tuple[str, dict[str, str]]]:
    """Each endpoint's path and headers on this server (file URLs are read off its own page)."""
    project = running.page(dataset.sample)
    status, _, body = http_get(running.port, project)
    if status != 200:
        raise RuntimeError(f"{project} answered {status}")
    hrefs = [unescape(h) for h in re.findall(rb'href="([^"]+)"', body) for h in [h.decode()]]
    wheel = next((h for h in hrefs if urlsplit(h).path.endswith("/" + dataset.sample_wheel)), None)
    if wheel is None:
        raise RuntimeError(f"{project} does not link {dataset.sample_wheel}")
    file_path = urlsplit(urljoin(running.url(project), wheel)).path
    return {
        "root": (running.page(), {}),
        "project_html": (project, {}),
        "project_json": (project, {"Accept": ACCEPT_JSON}),
        "big": (running.page(dataset.big), {}),
        "file": (file_path, {}),
    }


DRAIN_LIMIT = 60.0  # seconds a server may go on with abandoned requests before it is restarted


def _load(
    running: Running, path: str, headers: dict[str, str], options: Options
) -> tuple[LoadResult, int, bool]:
    """Median over `repeats` wrk runs; a server too slow to repeat in reason is run once.

    Returns the result, the number of runs, and whether the server is still busy with requests
    wrk abandoned `DRAIN_LIMIT` seconds after the last run (then it is restarted before the next
    endpoint, so that endpoint is not charged for this one).
    """
    results: list[LoadResult] = []
    busy = False
    for attempt in range(options.repeats):
        result = run_wrk(
            running.url(path),
            seconds=options.duration,
            threads=options.threads,
            connections=options.connections,
            headers=headers,
        )
        results.append(result)
        busy = wait_idle(running.server, limit=DRAIN_LIMIT) >= DRAIN_LIMIT
        if (attempt == 0 and result.rps < 20) or busy:
            break
    return median_result(results), len(results), busy


def _paired_load(
    running: Running, partner: Running, path: str, headers: dict[str, str], options: Options
) -> tuple[LoadResult, LoadResult, int]:
    """Alternate wrk runs: the partner (on its root), then `path` on ours, `repeats` times."""
    ours: list[LoadResult] = []
    theirs: list[LoadResult] = []
    for _ in range(options.repeats):
        for target, url, sink, extra in (
            (partner, partner.url(partner.page()), theirs, {}),
            (running, running.url(path), ours, headers),
        ):
            sink.append(
                run_wrk(
                    url,
                    seconds=options.duration,
                    threads=options.threads,
                    connections=options.connections,
                    headers=extra,
                )
            )
            wait_idle(target.server, limit=DRAIN_LIMIT)
    return median_result(ours), median_result(theirs), len(ours)


def _first_request_ms(running: Running, path: str) -> float:
    started = time.monotonic()
    status, _, _ = http_get(running.port, path, timeout=PROBE_TIMEOUT)
    elapsed = (time.monotonic() - started) * 1e3
    if status != 200:
        raise RuntimeError(f"{path} answered {status}")
    return elapsed


PROBE_TIMEOUT = 300.0  # one request alone: pypiserver takes seconds per page at 80,000 files


def _start(kind: Kind, dataset: Dataset, scratch: Path, options: Options) -> tuple[Running, float]:
    running = kind.start(dataset, scratch)
    try:
        started = wait_serving(
            running.server, running.port, running.page(), timeout=options.start_timeout
        )
    except BaseException:
        running.server.stop()
        raise
    return running, started


def measure(kind: Kind, dataset: Dataset, scratch: Path, options: Options) -> Figures:
    log = options.log
    scratch.mkdir(parents=True, exist_ok=True)
    if kind.name == "insidersd":
        _remove_upload(dataset)
    result = Figures(kind.setup)
    figures = result.figures
    running, started = _start(kind, dataset, scratch, options)
    partner: Running | None = None
    try:
        figures["start_s"] = round(started, 3)
        figures.update(running.figures)
        result.notes += running.notes
        wait_idle(running.server, limit=DRAIN_LIMIT)
        figures["rss_start_mb"] = round(running.server.rss_kb() / 1024, 1)
        processes = len(_pids(running.server))
        if processes > 1:
            result.notes.append(
                f"its RSS is the sum over its {processes} processes (shared pages count in each)"
            )
        log(
            f"  serving after {figures['start_s']:.2f} s, "
            f"RSS {figures['rss_start_mb']:.0f} MB ({processes} process(es))"
        )
        if kind.real_index:
            paths = _paths(running, dataset)
            figures["first_big_ms"] = round(_first_request_ms(running, paths["big"][0]), 1)
        else:
            paths = {e.key: (running.page(), {}) for e in ENDPOINTS}
        endpoints: dict[str, dict[str, Any]] = {}
        rss_peak = 0.0
        if options.pair_with is not None and kind.name == "insidersd":
            partner, _ = _start(options.pair_with, dataset, scratch / "partner", options)
            log(f"  paired with {options.pair_with.name}: its run comes right before each of ours")
        for endpoint in ENDPOINTS:
            path, headers = paths[endpoint.key]
            if not kind.real_index and endpoint.key != "root":
                endpoints[endpoint.key] = dict(endpoints["root"])
                continue
            began = time.monotonic()
            status, got, body = http_get(running.port, path, headers, timeout=PROBE_TIMEOUT)
            alone_ms = (time.monotonic() - began) * 1e3
            if status != 200:
                raise RuntimeError(f"{kind.name}: {path} answered {status}")
            entry: dict[str, Any] = {
                "path": path,
                "bytes": len(body),
                "alone_ms": round(alone_ms, 2),
            }
            if endpoint.json and kind.real_index:
                entry["json"] = "json" in got.get("content-type", "")
                if not entry["json"]:
                    result.notes.append(
                        f"answers {got.get('content-type')} to Accept: {ACCEPT_JSON} "
                        "(no PEP 691): its JSON row is its HTML page"
                    )
            profiled = kind.name == "insidersd" and endpoint.key == options.profile_endpoint
            if options.profile_seconds and profiled:
                figures["profile"] = profile(running, path, headers, options, scratch)
            if partner is not None:
                load, theirs, runs = _paired_load(running, partner, path, headers, options)
                busy = False
                entry["paired"] = {"server": partner.server.name, **theirs.as_dict()}
            else:
                load, runs, busy = _load(running, path, headers, options)
            entry.update(load.as_dict())
            entry["runs"] = runs
            endpoints[endpoint.key] = entry
            log(
                f"  {endpoint.label:24} {load.rps:>10,.1f} req/s  p50 {_ms(load.p50_ms)}  "
                f"p99 {_ms(load.p99_ms)}  alone {alone_ms:,.1f} ms  "
                f"({len(body):,} bytes, {runs} run(s)"
                + (f", {load.errors} errors" if load.errors else "")
                + ")"
            )
            if "paired" in entry:
                paired = entry["paired"]
                log(
                    f"  {'  ' + paired['server'] + ', paired':24} {paired['rps']:>10,.1f} req/s  "
                    f"p50 {_ms(paired['p50_ms'])}  p99 {_ms(paired['p99_ms'])}"
                )
            if load.errors:
                result.notes.append(
                    f"{endpoint.label}: {load.errors:,} errors or timeouts (wrk's timeout is "
                    f"10 s) beside {load.requests:,} answers"
                )
            rss_peak = max(rss_peak, running.server.rss_kb() / 1024)
            if busy:
                result.notes.append(
                    f"still busy {DRAIN_LIMIT:.0f} s after the load on the {endpoint.label} "
                    "stopped (abandoned requests): restarted before the next figure"
                )
                log("  still busy with abandoned requests: restarting it")
                running.server.stop()
                for companion in running.companions:
                    companion.stop()
                running, _ = _start(kind, dataset, scratch, options)
        figures["endpoints"] = endpoints
        figures["rss_load_mb"] = round(max(rss_peak, running.server.rss_kb() / 1024), 1)
        if kind.real_index:
            requirement = f"{dataset.sample}=={dataset.sample_version}"
            figures["pip_download_s"] = round(
                clients.pip_download(running, requirement, options.client_repeats), 3
            )
            figures["uv_install_s"] = round(
                clients.uv_install(running, requirement, options.client_repeats), 3
            )
            log(
                f"  pip download {figures['pip_download_s']:.2f} s, "
                f"uv pip install {figures['uv_install_s']:.2f} s"
            )
        if kind.name == "insidersd":
            _insidersd_extras(running, dataset, scratch, options, figures)
    finally:
        if partner is not None:
            partner.server.stop()
        running.server.stop()
        for companion in running.companions:
            companion.stop()
        if kind.name == "insidersd":
            _remove_upload(dataset)
    return result


# insidersd's web pages, loaded like the simple pages: the home page lists every project, the
# big project's page lists its 2,000 versions.
WEB_PAGES = (
    ("web_home", "/", "home page /"),
    ("web_big", "/project/{big}/", "2,000-version web page"),
)


def _web_pages(running: Running, dataset: Dataset, options: Options) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    for key, template, label in WEB_PAGES:
        path = template.format(big=dataset.big)
        began = time.monotonic()
        status, _, body = http_get(running.port, path, timeout=PROBE_TIMEOUT)
        first_ms = (time.monotonic() - began) * 1e3  # rendered at this first request
        if status != 200:
            raise RuntimeError(f"insidersd: {path} answered {status}")
        load, runs, _ = _load(running, path, {}, options)
        pages[key] = {
            "path": path,
            "bytes": len(body),
            "first_ms": round(first_ms, 1),
            **load.as_dict(),
            "runs": runs,
        }
        options.log(
            f"  {label:24} {load.rps:>10,.1f} req/s  p50 {_ms(load.p50_ms)}  "
            f"p99 {_ms(load.p99_ms)}  first {first_ms:,.1f} ms ({len(body):,} bytes)"
        )
    return pages


def _insidersd_extras(
    running: Running, dataset: Dataset, scratch: Path, options: Options, figures: dict[str, Any]
) -> None:
    log = options.log
    figures["web"] = _web_pages(running, dataset, options)
    status_ms, how = clients.ctl_status(running, scratch, options.client_repeats + 2)
    figures["ctl_status_ms"] = None if status_ms is None else round(status_ms * 1e3, 1)
    figures["ctl_status_how"] = how
    log(
        f"  {how}: {status_ms * 1e3:.0f} ms"
        if status_ms is not None
        else f"  insidersctl status: {how}"
    )
    if options.upload_mb > 0:
        wheel = big_upload_wheel(dataset, options.upload_mb)
        token = (dataset.store / "upload-token").read_text().strip()
        wait_idle(running.server, limit=30)
        upload = clients.upload(running, wheel, token)
        figures["upload"] = {
            "size_mb": round(upload.size_mb, 1),
            "seconds": round(upload.seconds, 2),
            "rss_before_mb": round(upload.rss_before_mb, 1),
            "rss_peak_mb": round(upload.rss_peak_mb, 1),
            "rss_growth_mb": round(upload.growth_mb, 1),
        }
        log(
            f"  upload {upload.size_mb:.0f} MB in {upload.seconds:.1f} s: RSS "
            f"{upload.rss_before_mb:.0f} -> {upload.rss_peak_mb:.0f} MB "
            f"(+{upload.growth_mb:.1f} MB)"
        )
    if options.crowd_clients > 0:
        _crowd(running, dataset, options, figures)


def _crowd(running: Running, dataset: Dataset, options: Options, figures: dict[str, Any]) -> None:
    """The load check: installers at once while uploads run; errors counted, target 0."""
    token = (dataset.store / "upload-token").read_text().strip()
    names = project_names(dataset.sizes)
    projects = [*names[:: max(1, len(names) // 50)], dataset.sample]
    wait_idle(running.server, limit=30)
    crowd = run_crowd(
        running.server,
        running.port,
        running.page(),
        projects,
        token,
        clients=options.crowd_clients,
        seconds=options.crowd_seconds,
    )
    figures["crowd"] = crowd.as_dict()
    shown = figures["crowd"]
    options.log(
        f"  {crowd.clients} installers for {crowd.seconds:.0f} s while uploading: "
        f"{crowd.installs:,} installs, {crowd.errors} errors, install p50 "
        f"{_ms(shown['install_p50_ms'])} p99 {_ms(shown['install_p99_ms'])}, request p99 "
        f"{_ms(shown['request_p99_ms'])}; {crowd.uploads} uploads, {crowd.upload_errors} "
        f"errors; RSS {crowd.rss_before_mb:.0f} -> {crowd.rss_peak_mb:.0f} MB"
    )
    for error in crowd.first_errors:
        options.log(f"    {error}")


def big_upload_wheel(dataset: Dataset, size_mb: int) -> Path:
    directory = dataset.root / "upload" / str(size_mb)
    wheels = list(directory.glob("*.whl")) if directory.exists() else []
    if wheels:
        return wheels[0]
    directory.mkdir(parents=True, exist_ok=True)
    return write_big_wheel(directory, UPLOAD_PROJECT, "1.0.0", size_mb * 1_000_000)


def _remove_upload(dataset: Dataset) -> None:
    """The upload figures' projects are not part of the dataset: keep the store as generated."""
    for project in (UPLOAD_PROJECT, CROWD_PROJECT):
        shutil.rmtree(dataset.store / "packages" / project, ignore_errors=True)


def _pids(server: Server) -> list[int]:
    return group_pids(server.pgid)


def _ms(value: float | None) -> str:
    return f"{value:8.2f} ms" if value is not None else "       n/a"


# -- profiling -----------------------------------------------------------------------------------


def profile(
    running: Running, path: str, headers: dict[str, str], options: Options, scratch: Path
) -> dict[str, Any]:
    """py-spy samples the daemon while wrk loads `path` alone; returns the hottest frames.

    py-spy comes from PyPI into the peers' venv; the raw (collapsed) stacks are kept in the
    scratch directory and summarised: self time per function, and time under each function.
    """
    py_spy = PEERS_BIN / "py-spy"
    if not py_spy.exists():
        return {"error": "py-spy is not installed in bench/.venv-peers"}
    out = scratch / "profile.txt"
    seconds = max(2, round(options.profile_seconds))
    spy = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(running.server.pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.5)
        run_wrk(
            running.url(path),
            seconds=seconds,
            threads=options.threads,
            connections=options.connections,
            headers=headers,
        )
        output, _ = spy.communicate(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    wait_idle(running.server, limit=30)
    if spy.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {output.strip()[-300:]}"}
    summary = summarise_profile(out.read_text())
    if options.profile_out is not None:
        shutil.copyfile(out, options.profile_out)
        summary["raw"] = str(options.profile_out)
    summary["endpoint"] = f"{path} ({', '.join(headers.values()) or 'HTML'})"
    return summary


def summarise_profile(collapsed: str, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            under[frame] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in under.most_common(top * 2)],
    }


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/file.py:line)": keep the file's last parts.
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame
    function, path, _line = match.groups()
    parts = Path(path).parts
    where = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{function} ({where})"
