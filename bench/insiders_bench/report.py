"""The table, the targets, and the comparison with an earlier run: pure functions of the results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

US = "insidersd"
FRONT = "insidersd-front"
NGINX = "nginx"
CEILING = "hypercorn-min"
BYTES_CEILING = "hypercorn-bytes"

Results = dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    get: Callable[[dict[str, Any]], float | None]
    unit: str
    higher_is_better: bool
    digits: int = 1


def _endpoint(key: str, figure: str) -> Callable[[dict[str, Any]], float | None]:
    def get(server: dict[str, Any]) -> float | None:
        value = server.get("endpoints", {}).get(key, {}).get(figure)
        return None if value is None else float(value)

    return get


def _figure(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(server: dict[str, Any]) -> float | None:
        value: Any = server
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return None if value is None else float(value)

    return get


ENDPOINT_LABELS = {
    "root": "root /simple/",
    "project_html": "project page HTML",
    "project_json": "project page JSON",
    "big": "2,000-version page",
    "file": "file download",
}


def _watcher_repos(results: Results | None) -> str:
    if results is None:
        return "N"
    watcher = results.get("servers", {}).get(US, {}).get("watcher") or {}
    count = watcher.get("repos") or results.get("settings", {}).get("watcher", {}).get("repos")
    return str(count) if count else "N"


def rows(results: Results | None = None) -> Iterator[Row]:
    """The table's rows; `results` only fills in labels (how many repositories were checked)."""
    for key, label in ENDPOINT_LABELS.items():
        yield Row(label, _endpoint(key, "rps"), "req/s", True, 0)
        yield Row(f"{label}: p50", _endpoint(key, "p50_ms"), "ms", False, 2)
        yield Row(f"{label}: p99", _endpoint(key, "p99_ms"), "ms", False, 2)
        yield Row(f"{label}: 1 request alone", _endpoint(key, "alone_ms"), "ms", False, 2)
    yield Row("2,000-version page: 1st request", _figure("first_big_ms"), "ms", False, 1)
    yield Row("start-up to serving", _figure("start_s"), "s", False, 2)
    yield Row("RSS after start", _figure("rss_start_mb"), "MB", False, 0)
    yield Row("RSS after the load", _figure("rss_load_mb"), "MB", False, 0)
    yield Row("pip download (1 package)", _figure("pip_download_s"), "s", False, 2)
    yield Row("uv pip install (1 package)", _figure("uv_install_s"), "s", False, 2)
    # The watcher: insidersd alone has one, so the peers' cells read n/a.
    repos = _watcher_repos(results)
    yield Row(
        f"watcher: check cycle, {repos} repos, no new tags",
        _figure("watcher", "cycle_s"),
        "s",
        False,
        2,
    )
    yield Row("watcher: tag to installable", _figure("watcher", "tag_total_s"), "s", False, 2)
    yield Row("watcher: ... of which python -m build", _figure("watcher", "build_s"), "s", False, 2)
    yield Row(
        "watcher: overhead outside the build", _figure("watcher", "overhead_ms"), "ms", False, 0
    )
    yield Row(
        "watcher: ... outside its build stage",
        _figure("watcher", "overhead_stages_ms"),
        "ms",
        False,
        0,
    )
    for stage in ("listing", "fetching", "building", "publishing"):
        yield Row(f"watcher: stage {stage}", _figure("watcher", "stages_ms", stage), "ms", False, 0)
    # The mirror targets: the front's column alone has them.
    yield Row("mirror: full copy to a directory", _figure("mirror_dir_s"), "s", False, 1)
    yield Row("mirror: ... operations", _figure("mirror_dir_requests"), "ops", False, 0)
    yield Row("mirror: full copy to SeaweedFS", _figure("mirror", "s3", "seconds"), "s", False, 1)
    yield Row("mirror: ... S3 requests", _figure("mirror", "s3", "requests"), "requests", False, 0)
    uploads = _mirror_uploads(results)
    yield Row(
        f"mirror lag during {uploads} uploads: p50",
        _figure("mirror", "burst", "lag_p50_ms"),
        "ms",
        False,
        0,
    )
    yield Row(
        f"mirror lag during {uploads} uploads: p99",
        _figure("mirror", "burst", "lag_p99_ms"),
        "ms",
        False,
        0,
    )


def _mirror_uploads(results: Results | None) -> str:
    burst = (results or {}).get("servers", {}).get(FRONT, {}).get("mirror", {}).get("burst")
    return f"{burst['uploads']:,}" if burst else "N"


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if digits == 0 and 0 < abs(value) < 10:
        digits = 1  # a slow server's 0.2 req/s is not 0
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> str:
    """How many times better insidersd is than the peer (below 1: the peer is better)."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return ""
    ratio = ours / theirs if higher_is_better else theirs / ours
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def table(results: Results) -> str:
    servers: dict[str, dict[str, Any]] = results["servers"]
    names = [n for n in servers if n == US] + [n for n in servers if n != US]
    label_width = max(38, *(len(f"{r.label} ({r.unit})") + 1 for r in rows(results)))
    titles = list(names)
    cell = max(22, *(len(t) + 2 for t in titles))
    lines = []
    header = f"{'figure':{label_width}}" + "".join(f"{t:>{cell}}" for t in titles)
    lines.append(header)
    lines.append("-" * len(header))
    for row in rows(results):
        ours = row.get(servers[US]) if US in servers else None
        cells = []
        for name in names:
            value = row.get(servers[name])
            text = _fmt(value, row.digits)
            if value == 0 and row.unit == "req/s":
                text = "0 (all timed out)"
            if name != US and value is not None:
                ratio = _ratio(ours, value, row.higher_is_better)
                text = f"{text} ({ratio})" if ratio else text
            cells.append(f"{text:>{cell}}")
        lines.append(f"{row.label + ' (' + row.unit + ')':{label_width}}" + "".join(cells))
    us = servers.get(US, {})
    upload = us.get("upload")
    extra = []
    if upload:
        extra.append(
            f"upload {upload['size_mb']:.0f} MB to insidersd (twine): RSS growth "
            f"{upload['rss_growth_mb']:.1f} MB ({upload['rss_before_mb']:.0f} -> "
            f"{upload['rss_peak_mb']:.0f} MB), {upload['seconds']:.1f} s"
        )
    for key, label in (("web_home", "home page"), ("web_big", "2,000-version web page")):
        page = us.get("web", {}).get(key)
        if page:
            extra.append(
                f"insidersd {label}: {page['rps']:,.0f} requests/s, p99 {page['p99_ms']:.1f} ms, "
                f"{page['bytes']:,} bytes, first render {page['first_ms']:.0f} ms"
            )
    crowd = us.get("crowd")
    if crowd:
        extra.append(
            f"load check: {crowd['clients']} installers for {crowd['seconds']:.0f} s while "
            f"uploading: {crowd['installs']:,} installs, {crowd['errors']} errors, install p99 "
            f"{_fmt(crowd['install_p99_ms'], 0)} ms, request p99 {_fmt(crowd['request_p99_ms'], 0)}"
            f" ms; {crowd['uploads']} uploads, {crowd['upload_errors']} errors; RSS "
            f"{crowd['rss_before_mb']:.0f} -> {crowd['rss_peak_mb']:.0f} MB"
        )
    if US in servers:
        status = us.get("ctl_status_ms")
        extra.append(
            f"insidersctl status: {status:.0f} ms ({us.get('ctl_status_how')})"
            if status is not None
            else f"insidersctl status: {us.get('ctl_status_how') or 'n/a (not available)'}"
        )
        extra.append(watcher_line(us.get("watcher")))
    if extra:
        lines.append("-" * len(header))
        lines += extra
    lines.append(
        "(Nx) beside a peer's figure: how many times better insidersd is than that peer (above 1:"
        " insidersd wins; below 1: it loses)."
    )
    for name in names:
        for note in servers[name].get("notes", []):
            lines.append(f"note, {name}: {note}")
    return "\n".join(lines)


def watcher_line(watcher: dict[str, Any] | None) -> str:
    """How the watcher's rows were taken, or why they are n/a."""
    if not watcher:
        return "watcher: not measured (--watcher-repos 0, or insidersd was not measured)"
    if "error" in watcher:
        return f"watcher: {watcher['error']}"
    stages = watcher.get("stages_ms", {})
    return (
        f"watcher (insidersd only): cycle = `insidersctl update --wait` over {watcher['repos']} "
        f"local repos whose tag is published, max-checks {watcher['max_checks']}, median of "
        f"{len(watcher.get('cycle_runs_s', []))} ({watcher['cycle_per_repo_ms']:.1f} ms a repo; "
        f"first check {watcher['first_check_s']:.2f} s)\n"
        f"  tag to installable: median of {watcher['tags']} new tags, `git tag` until the simple "
        f"page links the wheel (before listing {stages.get('before_listing', 0):.0f} ms, after "
        f"done {stages.get('after_done', 0):.0f} ms); python -m build: the tag's checkout built "
        f"alone, same index and pip cache; the repo's first build ({watcher['first_build_s']:.1f}"
        " s) not counted"
    )


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    limit: str
    passed: bool | None  # None: could not be measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.name, "value": self.value, "limit": self.limit, "pass": self.passed}


def front_targets(servers: dict[str, Any]) -> list[Target]:
    """insidersd + nginx front against plain nginx on a static tree, taken in the same run."""
    front, nginx = servers.get(FRONT), servers.get(NGINX)
    if front is None:
        return []
    out = []
    for key in ("root", "project_html", "project_json", "file"):
        label = f"{FRONT} {ENDPOINT_LABELS[key]}: req/s >= 90% of {NGINX} on a static tree"
        if nginx is None:
            out.append(Target(label, "nginx not measured", ">= 90%", None))
            continue
        ours, theirs = front["endpoints"][key]["rps"], nginx["endpoints"][key]["rps"]
        share = ours / theirs if theirs else 0.0
        out.append(
            Target(label, f"{share:.0%} ({ours:,.0f} vs {theirs:,.0f})", ">= 90%", share >= 0.9)
        )
    return out


def targets(results: Results) -> list[Target]:
    servers = results["servers"]
    us = servers.get(US)
    if us is None:
        return front_targets(servers)
    out: list[Target] = front_targets(servers)
    ceiling = servers.get(CEILING)
    for key in ("root", "project_html", "project_json"):
        label = ENDPOINT_LABELS[key]
        ours = us["endpoints"][key]
        # The paired figure was taken right before each of ours, under the same background load.
        theirs = ours.get("paired") or (ceiling["endpoints"]["root"] if ceiling else None)
        if theirs is None:
            out.append(Target(f"{label}: >= 70% of {CEILING} req/s", "", "", None))
            continue
        share = ours["rps"] / theirs["rps"] if theirs["rps"] else 0.0
        out.append(
            Target(
                f"{label}: req/s >= 70% of {CEILING}",
                f"{share:.0%} ({ours['rps']:,.0f} vs {theirs['rps']:,.0f})",
                ">= 70%",
                share >= 0.7,
            )
        )
        if ours.get("p99_ms") is not None and theirs.get("p99_ms"):
            times = ours["p99_ms"] / theirs["p99_ms"]
            out.append(
                Target(
                    f"{label}: p99 within 2x of {CEILING}",
                    f"{times:.2f}x ({ours['p99_ms']:.1f} vs {theirs['p99_ms']:.1f} ms)",
                    "<= 2x",
                    times <= 2,
                )
            )
    big = us["endpoints"]["big"]
    same_bytes = servers.get(BYTES_CEILING)
    if same_bytes is not None:
        reference = same_bytes["endpoints"]["big"]["rps"]
        share = big["rps"] / reference if reference else 0.0
        out.append(
            Target(
                "2,000-version page after the 1st request: req/s >= 70% of the same bytes "
                f"from {BYTES_CEILING}",
                f"{share:.0%} ({big['rps']:,.0f} vs {reference:,.0f})",
                ">= 70%",
                share >= 0.7,
            )
        )
    small = us["endpoints"]["project_html"]
    out.append(
        Target(
            "2,000-version page p99 within 2x of the 40-file page's p99 (informative: "
            "it is ~100x the bytes)",
            f"{big['p99_ms'] / small['p99_ms']:.1f}x" if small.get("p99_ms") else "n/a",
            "<= 2x",
            (big["p99_ms"] <= 2 * small["p99_ms"]) if small.get("p99_ms") else None,
        )
    )
    files = results.get("dataset", {}).get("files", 0)
    out.append(
        Target(
            f"start-up to serving with {files:,} files",
            f"{us['start_s']:.2f} s",
            "< 2 s",
            us["start_s"] < 2,
        )
    )
    rss = max(us.get("rss_start_mb", 0), us.get("rss_load_mb", 0))
    out.append(
        Target(
            f"RSS with {files:,} files (max of after start/after load)",
            f"{rss:.0f} MB",
            "< 150 MB",
            rss < 150,
        )
    )
    upload = us.get("upload")
    out.append(
        Target(
            f"RSS growth during a {upload['size_mb']:.0f} MB upload" if upload else "upload",
            f"{upload['rss_growth_mb']:.1f} MB" if upload else "not measured",
            "< 20 MB",
            upload["rss_growth_mb"] < 20 if upload else None,
        )
    )
    crowd = us.get("crowd")
    out.append(
        Target(
            f"errors with {crowd['clients']} installers while uploading" if crowd else "load check",
            f"{crowd['errors'] + crowd['upload_errors']}" if crowd else "not measured",
            "0",
            crowd["errors"] + crowd["upload_errors"] == 0 if crowd else None,
        )
    )
    status = us.get("ctl_status_ms")
    out.append(
        Target(
            "insidersctl status wall time",
            f"{status:.0f} ms" if status is not None else "n/a (not available)",
            "< 80 ms",
            status < 80 if status is not None else None,
        )
    )
    return out


def targets_table(found: list[Target]) -> str:
    lines = ["targets:"]
    for target in found:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[target.passed]
        limit = f" (target {target.limit})" if target.limit else ""
        lines.append(f"  [{mark}] {target.name}: {target.value}{limit}")
    return "\n".join(lines)


# -- comparing with an earlier run -------------------------------------------------------------


def compare(old: Results, new: Results) -> str:
    lines = [f"compared with {old.get('timestamp', '?')} (old -> new, change):"]
    for name, server in new["servers"].items():
        before = old.get("servers", {}).get(name)
        if before is None:
            lines.append(f"  {name}: not in the old run")
            continue
        lines.append(f"  {name}:")
        for row in rows(new):
            a, b = row.get(before), row.get(server)
            if a is None or b is None:
                continue
            change = (b - a) / a if a else 0.0
            better = (change > 0) == row.higher_is_better and abs(change) >= 0.05
            worse = (change < 0) == row.higher_is_better and abs(change) >= 0.05
            flag = "  better" if better else "  WORSE" if worse else ""
            lines.append(
                f"    {row.label + ' (' + row.unit + ')':48} {_fmt(a, row.digits):>12} -> "
                f"{_fmt(b, row.digits):>12}  {change:+7.1%}{flag}"
            )
    old_cores = old.get("machine", {}).get("cores")
    new_cores = new.get("machine", {}).get("cores")
    if old_cores != new_cores:
        lines.append(f"  (the machines differ: {old_cores} cores then, {new_cores} now)")
    return "\n".join(lines)
