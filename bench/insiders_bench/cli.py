"""`python bench/run.py`: insidersd against its peers in one run; prints and saves the figures."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import procs, report
from . import scale as scale_report
from . import upstreamcache as upstream_report
from .base import BENCH_DIR
from .dataset import Sizes, generate
from .load import wrk_path
from .measure import Options, measure
from .procs import install_cleanup, stop_all
from .relay import Link
from .scale import SIZES as SCALE_SIZES
from .scale import ScaleOptions, run_scale
from .servers import KINDS
from .upstreamcache import CLIENTS, REQUIREMENTS, UPSTREAM_ENV, UpstreamOptions
from .watcher import WatcherOptions, WatcherUnavailable, measure_watcher

DEFAULT_SERVERS = list(KINDS)
QUICK = {
    "projects": 200,
    "versions": 10,
    "big_versions": 2000,
    "duration": 2.0,
    "repeats": 1,
    "watcher_repos": 20,
    "watcher_cycles": 3,
    "watcher_tags": 3,
    "crowd_seconds": 10.0,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark insidersd against pypiserver, devpi-server, nginx on a static tree "
        "and a minimal ASGI app on hypercorn, on the same synthetic files, on loopback.",
    )
    p.add_argument("--quick", action="store_true", help="a small store and short runs (~minutes)")
    p.add_argument("--projects", type=int, help="projects in the store (default 2000)")
    p.add_argument("--versions", type=int, help="versions per project, 2 files each (default 20)")
    p.add_argument("--big-versions", type=int, help="versions of the big project (default 2000)")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    p.add_argument("--repeats", type=int, help="wrk runs per figure; the median is kept (3)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--client-repeats", type=int, default=3, help="pip/uv/ctl runs (default 3)")
    p.add_argument("--upload-mb", type=int, default=200, help="upload size, 0 to skip (200)")
    p.add_argument(
        "--crowd-clients",
        type=int,
        help="load check: installers at once while uploads run, 0 to skip (200)",
    )
    p.add_argument("--crowd-seconds", type=float, help="load check duration (default 20)")
    p.add_argument(
        "--watcher-repos",
        type=int,
        help="repositories in the watcher's timed check cycle, 0 to skip the watcher (200)",
    )
    p.add_argument(
        "--mirror-uploads",
        type=int,
        default=1000,
        help="uploads in the burst that times the mirror's lag, 0 to skip (1000)",
    )
    p.add_argument("--watcher-cycles", type=int, help="timed check cycles; the median is kept (5)")
    p.add_argument("--watcher-tags", type=int, help="new tags timed to installable (5)")
    _names_option(p, "--servers", DEFAULT_SERVERS, "all available")
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sample insidersd with py-spy for SECONDS under load on one endpoint",
    )
    p.add_argument(
        "--profile-endpoint",
        default="project_html",
        choices=["root", "project_html", "project_json", "big", "file"],
        help="the endpoint --profile loads (default project_html)",
    )
    p.add_argument(
        "--no-paired",
        dest="paired",
        action="store_false",
        help="do not run hypercorn-min beside insidersd, alternating with each of its runs "
        "(pairing keeps the target ratios fair when other processes load the machine)",
    )
    scale = p.add_argument_group(
        "scaling (--scale)",
        "how insidersd's cost grows with the index: stores of 10k, 100k and 1M files, each "
        "measured for start-up, memory, upload to page, insidersctl, and the mirror; no peers",
    )
    scale.add_argument("--scale", action="store_true", help="run the scaling benchmark instead")
    _names_option(scale, "--scale-sizes", SCALE_SIZES, "all")
    scale.add_argument(
        "--scale-uploads",
        type=int,
        default=25,
        help="uploads timed to their page, per size: as many new projects, as many new files "
        "of the largest project (25)",
    )
    scale.add_argument(
        "--scale-burst",
        type=int,
        default=1000,
        help="uploads in each mirror lag's burst, directory and SeaweedFS (1000)",
    )
    scale.add_argument(
        "--scale-serial-seconds",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="bound on the copy to SeaweedFS one request at a time, whose rate the parallel "
        "copy is compared with (120)",
    )
    scale.add_argument(
        "--scale-mirror-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="bound on each mirror step (copy, restore) per size; a step over it is not tried at "
        "the next size (300)",
    )
    scale.add_argument(
        "--no-scale-mirror", dest="scale_mirror", action="store_false", help="skip the mirror"
    )
    upstream = p.add_argument_group(
        "upstream cache (--upstream-cache)",
        "a pinned set of real requirements installed with uv and pip: direct from the upstream, "
        "through redirect mode, through cache mode cold and warm, through the nginx front, and "
        "with the upstream unplugged; real downloads, no peers",
    )
    upstream.add_argument(
        "--upstream-cache", action="store_true", help="run the upstream-cache rows instead"
    )
    upstream.add_argument(
        "--upstream-url",
        help=f"the upstream index (default: ${UPSTREAM_ENV}, else the index this machine's pip "
        "uses, as insidersd's own default)",
    )
    upstream.add_argument(
        "--upstream-rounds", type=int, default=3, help="rounds; each row is their median (3)"
    )
    upstream.add_argument(
        "--upstream-rtt",
        type=float,
        default=0.0,
        metavar="MS",
        help="a round trip added to each request to the upstream, as over the internet (0)",
    )
    upstream.add_argument(
        "--upstream-mbit",
        type=float,
        default=0.0,
        metavar="MBIT",
        help="the bandwidth all the upstream's connections share, as a site's uplink (0: none)",
    )
    upstream.add_argument(
        "--upstream-relative-links",
        action="store_true",
        help="no [server] public-url for the cache daemons: their pages link files relatively "
        "(by default it is set to the URL each row's clients use, as a team's is)",
    )
    _names_option(upstream, "--upstream-clients", CLIENTS, "both")
    upstream.add_argument(
        "--upstream-requirements",
        type=Path,
        default=REQUIREMENTS,
        help="the pinned set installed (default bench/upstream-requirements.txt)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_DIR / ".work",
        help="where the generated files are kept between runs (default bench/.work)",
    )
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--compare", type=Path, metavar="OLD.json", help="print changes since then")
    p.add_argument(
        "--show", type=Path, metavar="RUN.json", help="print a saved run's table; measure nothing"
    )
    return p


def _settings(args: argparse.Namespace) -> tuple[Sizes, Options, WatcherOptions]:
    quick: dict[str, Any] = QUICK if args.quick else {}

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return value if value is not None else quick.get(name, default)

    sizes = Sizes(
        projects=pick("projects", 2000),
        versions=pick("versions", 20),
        big_versions=pick("big_versions", 2000),
    )
    options = Options(
        duration=pick("duration", 5.0),
        repeats=max(1, pick("repeats", 3)),
        threads=args.threads,
        connections=args.connections,
        client_repeats=max(1, args.client_repeats),
        upload_mb=args.upload_mb,
        crowd_clients=max(0, pick("crowd_clients", 200)),
        crowd_seconds=pick("crowd_seconds", 20.0),
        profile_seconds=args.profile,
        profile_endpoint=args.profile_endpoint,
        pair_with=KINDS["hypercorn-min"] if args.paired else None,
    )
    watcher = WatcherOptions(
        repos=max(0, pick("watcher_repos", 200)),
        cycles=max(1, pick("watcher_cycles", 5)),
        tags=max(1, pick("watcher_tags", 5)),
    )
    return sizes, options, watcher


def _names_option(
    group: argparse._ActionsContainer, flag: str, known: Collection[str], every: str
) -> None:
    """An option naming some of `known`, comma-separated (`_listed` reads it), all by default:
    `every` says how many that is."""
    group.add_argument(
        flag,
        default=",".join(known),
        help=f"comma-separated, from: {', '.join(known)} (default: {every})",
    )


def _listed(text: str, known: Collection[str], what: str) -> list[str]:
    """The comma-separated names in `text`; one that is not `known` ends the run, naming them."""
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return wanted


def _begun(kind: str | None = None) -> dict[str, Any]:
    """A run's results as it begins: its kind (none for the peers' run), the time, this machine
    and its load average before."""
    return {
        **({"kind": kind} if kind is not None else {}),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": round(os.getloadavg()[0], 2),
        },
    }


def _in_scratch(
    prefix: str, results: dict[str, Any], measure: Callable[[Path], dict[str, Any]]
) -> None:
    """`measure(scratch)`'s figures into `results`: in a scratch directory of its own (removed
    after, every server stopped, whatever happens), then the load average after it."""
    scratch_root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        results.update(measure(scratch_root))
    finally:
        stop_all()
        shutil.rmtree(scratch_root, ignore_errors=True)
    results["machine"]["loadavg_after"] = round(os.getloadavg()[0], 2)


def _verdicts(rows: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The targets' (name, figure, verdict) rows as the results keep them."""
    return [
        {"target": name, "figure": figure, "verdict": verdict} for name, figure, verdict in rows
    ]


def run(args: argparse.Namespace, profile_out: Path | None = None) -> dict[str, Any]:
    sizes, options, watcher = _settings(args)
    options.profile_out = profile_out
    if wrk_path() is None:
        print(
            "wrk is not installed (apt-get install -y wrk; make bench does it): falling back to "
            "a weak Python load generator, whose figures are not comparable",
            flush=True,
        )
    wanted = _listed(args.servers, KINDS, "servers")
    work = args.work_dir.resolve() / f"{sizes.projects}x{sizes.versions}+{sizes.big_versions}"
    procs.RUN_MARKER = str(args.work_dir.resolve())
    dataset = generate(work, sizes)
    results: dict[str, Any] = {
        **_begun(),
        "settings": {
            "load": "wrk" if wrk_path() else "python (wrk missing)",
            "wrk": f"-t{options.threads} -c{options.connections} -d{options.duration:g}s",
            "repeats": options.repeats,
            "client_repeats": options.client_repeats,
            "watcher": {
                "repos": watcher.repos,
                "cycles": watcher.cycles,
                "tags": watcher.tags,
            },
        },
        "dataset": {**asdict(sizes), "files": dataset.files, "sample": dataset.sample},
        "servers": {},
        "skipped": {},
    }
    print(
        f"{dataset.files:,} files ({sizes.projects:,} projects x {sizes.versions} versions x 2 "
        f"+ {sizes.big_versions:,} versions x 2); wrk {results['settings']['wrk']}, "
        f"median of {options.repeats}; {os.cpu_count()} cores",
        flush=True,
    )
    if os.getloadavg()[0] > 0.5:
        print(
            f"warning: the machine is busy already (load average {os.getloadavg()[0]:.1f}): "
            "other processes will share the cores with the servers and wrk",
            flush=True,
        )
    scratch_root = Path(tempfile.mkdtemp(prefix="insiders-bench-"))
    try:
        for name in wanted:
            kind = KINDS[name]
            why = kind.unavailable()
            if why:
                print(f"{name}: skipped, {why}", flush=True)
                results["skipped"][name] = why
                continue
            print(f"{name}: {kind.setup}", flush=True)
            try:
                figures = measure(kind, dataset, scratch_root / name, options)
            except (RuntimeError, OSError) as error:
                print(f"{name}: FAILED: {error}", flush=True)
                results["skipped"][name] = f"failed: {error}"
                continue
            results["servers"][name] = {
                "setup": figures.setup,
                **figures.figures,
                "notes": figures.notes,
            }
        front = results["servers"].get("insidersd-front")
        if front is not None and args.mirror_uploads > 0:
            from .mirror import measure_mirror

            print("insidersd mirror targets: SeaweedFS, and the lag under uploads", flush=True)
            try:
                front["mirror"] = measure_mirror(
                    dataset, scratch_root / "mirror", args.mirror_uploads
                )
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"insidersd mirror: FAILED: {error}", flush=True)
                front["mirror"] = {"error": f"failed: {error}"}
        ours = results["servers"].get("insidersd")
        if ours is not None and watcher.repos > 0:
            print("insidersd watcher: a check cycle, and a new tag to installable", flush=True)
            try:
                ours["watcher"] = measure_watcher(scratch_root / "watcher", watcher)
            except WatcherUnavailable as error:
                print(f"insidersd watcher: skipped, {error}", flush=True)
                ours["watcher"] = {"error": f"not measured: {error}"}
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"insidersd watcher: FAILED: {error}", flush=True)
                ours["watcher"] = {"error": f"failed: {error}"}
    finally:
        stop_all()
        shutil.rmtree(scratch_root, ignore_errors=True)
    results["machine"]["loadavg_after"] = round(os.getloadavg()[0], 2)
    results["targets"] = [t.as_dict() for t in report.targets(results)]
    return results


def run_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """The scaling benchmark (`--scale`): the curve of insidersd's costs from 10k to 1M files."""
    wanted = _listed(args.scale_sizes, SCALE_SIZES, "sizes")
    procs.RUN_MARKER = str(args.work_dir.resolve())
    options = ScaleOptions(
        sizes=wanted,
        uploads=max(1, args.scale_uploads),
        burst=max(1, args.scale_burst),
        mirror=args.scale_mirror,
        mirror_timeout=args.scale_mirror_timeout,
        serial_seconds=args.scale_serial_seconds,
    )
    results: dict[str, Any] = {
        **_begun("scale"),
        "settings": {
            "uploads": options.uploads,
            "burst": options.burst,
            "mirror": options.mirror,
            "mirror_timeout_s": options.mirror_timeout,
        },
    }
    work = args.work_dir.resolve()
    _in_scratch("insiders-scale-", results, lambda scratch: run_scale(work, scratch, options))
    results["targets"] = _verdicts(scale_report.targets(results))
    return results


def run_upstream(args: argparse.Namespace) -> dict[str, Any]:
    """The upstream-cache rows (`--upstream-cache`): real installs through each upstream mode."""
    from .upstreamcache import default_upstream, measure_upstream_cache

    clients = _listed(args.upstream_clients, CLIENTS, "clients")
    procs.RUN_MARKER = str(args.work_dir.resolve())
    options = UpstreamOptions(
        upstream=args.upstream_url or default_upstream(),
        requirements=args.upstream_requirements.resolve(),
        rounds=max(1, args.upstream_rounds),
        clients=clients,
        link=Link(rtt=args.upstream_rtt / 1000, rate=args.upstream_mbit * 1e6 / 8),
        public_url=not args.upstream_relative_links,
    )
    results: dict[str, Any] = _begun("upstream-cache")
    results["link"] = options.link.describe()
    print(
        f"upstream {options.upstream} ({results['link']}); {options.requirements.name}; "
        f"{', '.join(clients)}; {options.rounds} rounds",
        flush=True,
    )
    _in_scratch(
        "insiders-upstream-",
        results,
        lambda scratch: {"upstream_cache": measure_upstream_cache(scratch, options)},
    )
    results["targets"] = _verdicts(upstream_report.targets(results["upstream_cache"]))
    return results


def _saved(results: dict[str, Any]) -> str:
    kind = results.get("kind")
    if kind == "scale":
        return scale_report.summary(results)
    if kind == "upstream-cache":
        return upstream_report.summary(results)
    return summary(results)


def measured(
    args: argparse.Namespace,
    measure: Callable[[str], dict[str, Any]],
    summarize: Callable[[dict[str, Any]], str],
    suffix: str,
) -> dict[str, Any] | None:
    """One kind of run: `measure(stamp)` (every server stopped on the way out), its summary
    printed, its results saved as STAMP{suffix}.json in the results directory; None when it was
    interrupted."""
    install_cleanup()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        results = measure(stamp)
    except KeyboardInterrupt:
        stop_all()
        print("interrupted; every server started was stopped", file=sys.stderr)
        return None
    print()
    print(summarize(results))
    path = args.results_dir / f"{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {path}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.show:
        print(_saved(json.loads(args.show.read_text())))
        return 0
    if args.upstream_cache:
        results = measured(
            args, lambda _: run_upstream(args), upstream_report.summary, "-upstream-cache"
        )
        if results is None:
            return 130
        return 0 if all(t["verdict"] == "PASS" for t in results["targets"]) else 1
    if args.scale:
        results = measured(args, lambda _: run_scaling(args), scale_report.summary, "-scale")
        if results is None:
            return 130
        return 0 if results["sizes"] else 1
    results = measured(
        args, lambda stamp: run(args, args.results_dir / f"{stamp}-profile.txt"), summary, ""
    )
    if results is None:
        return 130
    if args.compare:
        old = json.loads(args.compare.read_text())
        print()
        print(report.compare(old, results))
    return 0 if results["servers"] else 1


def summary(results: dict[str, Any]) -> str:
    machine = results["machine"]
    parts = [
        f"{results['timestamp']}: {results['dataset']['files']:,} files, "
        f"{machine['cores']} cores, load average {machine.get('loadavg_before', '?')} before, "
        f"wrk {results['settings']['wrk']}, median of {results['settings']['repeats']}",
        report.table(results),
        report.targets_table(report.targets(results)),
    ]
    profile = results["servers"].get("insidersd", {}).get("profile")
    if profile:
        parts.append(profile_text(profile))
    for name, why in results.get("skipped", {}).items():
        parts.append(f"{name}: not measured: {why}")
    return "\n\n".join(parts)


def profile_text(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"profile: {profile['error']}"
    lines = [
        f"profile of insidersd under load on {profile.get('endpoint', 'one endpoint')} "
        f"({profile['samples']} samples, py-spy; raw stacks: {profile.get('raw', 'not kept')}):"
    ]
    lines.append("  self time:")
    lines += [f"    {share:5.1f}%  {frame}" for frame, share in profile.get("self", [])]
    lines.append(
        "  time under (inclusive; py-spy sees a suspended trio task's frames without the run "
        "loop's beneath them, so main/run undercount):"
    )
    lines += [f"    {share:5.1f}%  {frame}" for frame, share in profile.get("inclusive", [])]
    return "\n".join(lines)
