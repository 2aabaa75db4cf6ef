"""The watcher's figures: a check cycle over many repositories with no new tag, and the time from a
new tag to an installable version, beside a plain `python -m build` of the same tag.

Two daemons of their own, apart from the served dataset's: a local upstream (`--upstream-mode
none`) holding the build backends' wheels from `.cache/wheelhouse` (`make` downloads them; no build
reaches the public network), and the measured insidersd falling back to it, with the periodic
check off (`[watcher] enabled = false`) so only the timed `insidersctl update --wait` checks.

- The cycle: N small hatchling repositories, each tagged v1.0.0, whose 1.0.0 (a wheel and an
  sdist) is uploaded to the measured daemon first, so its check finds it published: a full cycle
  is N `git ls-remote` and nothing to build. The first check of each repository (it also records
  what it skipped) is timed apart; the figure is the median of the later cycles.
- Tag to installable: one more hatchling repository, its first version built once (the mirror is
  cloned and the build backend fetched through the upstream: a steady state, as after any first
  build). Then for each new version: commit, and time from `git tag` through `insidersctl --json
  update NAME --wait` until the project's simple page links the new wheel; the progress events
  give the stages (listing, fetching, building, publishing, done). A plain `python -m build
  --sdist --wheel` of the same tag's checkout, run as the watcher runs it (`nice -n 10`, the same
  index in PIP_INDEX_URL), is timed right after; overhead = total - that build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.projects import module_name, write_hatchling_project

from .base import PROJECT_BIN, PROJECT_DIR, insidersd_argv, isolated_env
from .dataset import make_sdist, make_wheel
from .procs import Server, free_port, http_get, serving

WHEELHOUSE = PROJECT_DIR / ".cache" / "wheelhouse"
CYCLE_PREFIX = "benchwatch"
TAGGED = "benchwatch-tagged"
CONFIG = "[watcher]\nenabled = false\nmax-checks = 4\n"
STAGES = ("listing", "fetching", "building", "publishing", "done")


class WatcherUnavailable(RuntimeError):
    """Something the figures need is missing (the wheelhouse, git): why, for the report."""


@dataclass
class WatcherOptions:
    #: repositories in the check cycle (0: no watcher figures)
    repos: int = 200
    #: timed check cycles after the first one
    cycles: int = 5
    #: new tags timed from tag to installable
    tags: int = 5
    log: Callable[[str], None] = print


def unavailable() -> str | None:
    if shutil.which("git") is None:
        return "git is not installed"
    if not sorted(WHEELHOUSE.glob("*.whl")):
        return (
            f"no build backends in {WHEELHOUSE.relative_to(PROJECT_DIR)} "
            "(make .cache/wheelhouse/.complete downloads them)"
        )
    return None


# -- git repositories ----------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _git_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_ENV, HOME=str(scratch / "home"), GIT_CONFIG_GLOBAL=os.devnull)
    return env


def git(repo: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo.name} failed: {done.stderr.strip()}")
    return done.stdout


def write_repo(where: Path, name: str, version: str, env: dict[str, str]) -> Path:
    """A git repository holding a small hatchling project at `version`, committed, not tagged."""
    repo = write_hatchling_project(
        where / name, name, version, description="A project the insiders benchmark's watcher builds"
    )
    git(repo, "init", "--quiet", "--initial-branch", "main", env=env)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "--quiet", "-m", f"release {version}", env=env)
    return repo


def commit_version(repo: Path, version: str, env: dict[str, str]) -> None:
    pyproject = repo / "pyproject.toml"
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
    pyproject.write_text(text)
    (repo / "src" / module_name(repo.name) / "__init__.py").write_text(f'VERSION = "{version}"\n')
    git(repo, "commit", "--quiet", "-am", f"release {version}", env=env)


# -- the daemons ---------------------------------------------------------------------------------


@dataclass
class Daemon:
    server: Server
    port: int
    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def index(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    @property
    def env(self) -> dict[str, str]:
        return isolated_env(self.home)

    def token(self) -> str:
        return (self.data_dir / "upload-token").read_text().strip()


def start_daemon(name: str, home: Path, extra: Sequence[str]) -> Daemon:
    port = free_port()
    (home / "run" / "insiders").mkdir(parents=True, exist_ok=True)
    argv = [*insidersd_argv(port, home / "data", home, upstream_mode=None), *extra]
    server = Server(name, argv, log=home / f"{name}.log", env=isolated_env(home))
    return Daemon(serving(server, port, "/simple/", timeout=60), port, home)


def upload(client: httpx.Client, daemon: Daemon, filename: str, content: bytes) -> None:
    """A legacy-API upload, as twine sends it."""
    name, version = filename.split("-")[:2]
    version = version.removesuffix(".tar.gz")
    form = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
        "sha256_digest": hashlib.sha256(content).hexdigest(),
    }
    response = client.post(
        f"http://127.0.0.1:{daemon.port}/legacy/",
        data=form,
        files={"content": (filename, content, "application/octet-stream")},
        auth=("__token__", daemon.token()),
    )
    if response.status_code != 200:
        raise RuntimeError(f"uploading {filename}: {response.status_code} {response.text[:300]}")


def ctl(daemon: Daemon, *args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [str(PROJECT_BIN / "insidersctl"), *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"insidersctl {' '.join(args[:3])} failed ({done.returncode}): "
            f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
        )
    return done.stdout


def update(daemon: Daemon, *names: str) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """`insidersctl --json update [NAMES] --wait`: wall seconds, progress events, final report.

    Each event is one JSON object on a line as it comes; `received` is when this process read it.
    """
    argv = [str(PROJECT_BIN / "insidersctl"), "--json", "update", *names, "--wait"]
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    process = subprocess.Popen(
        argv, env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.strip():
                event = json.loads(line)
                event["received"] = time.time()
                events.append(event)
        process.wait(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    elapsed = time.monotonic() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0 or not events:
        raise RuntimeError(
            f"insidersctl update failed ({process.returncode}): {events[-3:]}\n{stderr[-1500:]}"
        )
    report = events.pop()
    return elapsed, events, report


def _outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {r["repo"]: r["outcome"] for r in report.get("results", ())}


# -- the figures ---------------------------------------------------------------------------------


def measure_watcher(scratch: Path, options: WatcherOptions) -> dict[str, Any]:
    why = unavailable()
    if why:
        raise WatcherUnavailable(why)
    log = options.log
    scratch.mkdir(parents=True, exist_ok=True)
    env = _git_env(scratch)
    (scratch / "home").mkdir(exist_ok=True)
    figures: dict[str, Any] = {"repos": options.repos, "max_checks": 4}
    upstream = start_daemon("insidersd-upstream", scratch / "upstream", ["--upstream-mode", "none"])
    daemon: Daemon | None = None
    try:
        with httpx.Client(timeout=120) as client:
            for wheel in sorted(WHEELHOUSE.glob("*.whl")):
                upload(client, upstream, wheel.name, wheel.read_bytes())
            home = scratch / "daemon"
            config = home / "xdg" / "xdg_config_home" / "insiders" / "config.toml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(CONFIG)
            daemon = start_daemon(
                "insidersd-watcher", home, ["--config", str(config), "--upstream", upstream.index]
            )
            log(
                f"  watcher: insidersd with [watcher] enabled = false, max-checks = 4, falling "
                f"back to a local upstream holding {len(list(WHEELHOUSE.glob('*.whl')))} "
                "build-backend wheels"
            )
            figures.update(_cycle(daemon, client, scratch / "repos", env, options))
        figures.update(_tag_to_installable(daemon, scratch, env, options))
    finally:
        if daemon is not None:
            daemon.server.stop()
        upstream.server.stop()
    return figures


def _cycle(
    daemon: Daemon, client: httpx.Client, where: Path, env: dict[str, str], options: WatcherOptions
) -> dict[str, Any]:
    log = options.log
    count = options.repos
    width = max(3, len(str(count)))
    names = [f"{CYCLE_PREFIX}-{i:0{width}d}" for i in range(count)]
    where.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    for name in names:
        repo = write_repo(where, name, "1.0.0", env)
        git(repo, "tag", "v1.0.0", env=env)
        for filename, content in (make_wheel(name, "1.0.0"), make_sdist(name, "1.0.0")):
            upload(client, daemon, filename, content)
        ctl(daemon, "repos", "add", f"{repo}:{name}", timeout=60)
    log(
        f"  watcher: {count} repositories made, their 1.0.0 uploaded and added "
        f"({time.monotonic() - began:.0f} s)"
    )
    first, _, report = update(daemon)
    outcomes = _outcomes(report)
    if sorted(outcomes) != names or set(outcomes.values()) != {"up-to-date"}:
        raise RuntimeError(f"the first check was not all up to date: {report}")
    times = []
    for _ in range(max(1, options.cycles)):
        seconds, events, report = update(daemon)
        outcomes = _outcomes(report)
        if len(outcomes) != count or set(outcomes.values()) != {"up-to-date"}:
            raise RuntimeError(f"a check cycle was not all up to date: {report}")
        listed = sum(1 for e in events if e.get("stage") == "listing")
        if listed != count:
            raise RuntimeError(f"a check cycle listed {listed} of {count} repositories")
        times.append(seconds)
    cycle = statistics.median(times)
    log(
        f"  watcher: check cycle over {count} repos, no new tags: {cycle:.2f} s "
        f"(median of {len(times)}; {cycle / count * 1e3:.1f} ms a repository; "
        f"the first check {first:.2f} s)"
    )
    return {
        "cycle_s": round(cycle, 3),
        "cycle_runs_s": [round(t, 3) for t in times],
        "cycle_per_repo_ms": round(cycle / count * 1e3, 2),
        "first_check_s": round(first, 3),
    }


def _wheel_listed(daemon: Daemon, name: str, version: str) -> bool:
    status, _, body = http_get(daemon.port, f"/simple/{name}/", timeout=30)
    wheel = re.escape(f"/{module_name(name)}-{version}-".encode()) + rb'[^"#/]*\.whl'
    return status == 200 and re.search(wheel, body) is not None


def _stages(events: list[dict[str, Any]], tagged_at: float, listed_at: float) -> dict[str, float]:
    """Seconds in each stage, from the daemon's event times (one repository, one version)."""
    at: dict[str, float] = {}
    for event in events:
        at.setdefault(event["stage"], float(event["time"]))
    missing = [s for s in STAGES if s not in at]
    if missing:
        raise RuntimeError(f"no {', '.join(missing)} event: {[e['stage'] for e in events]}")
    return {
        "before_listing": at["listing"] - tagged_at,
        "listing": at["fetching"] - at["listing"],
        "fetching": at["building"] - at["fetching"],
        "building": at["publishing"] - at["building"],
        "publishing": at["done"] - at["publishing"],
        "after_done": listed_at - at["done"],
    }


def plain_build(repo: Path, tag: str, where: Path, daemon: Daemon, env: dict[str, str]) -> float:
    """Wall seconds of `python -m build --sdist --wheel` of a fresh checkout of `tag`, run as the
    watcher runs it: niced, the same index for the build backend, the daemon's environment (so
    the same pip cache, warm from the first build)."""
    from insiders.watcher.builder import build_env

    environment = build_env(daemon.index)
    environment.update({k: v for k, v in daemon.env.items() if k.startswith("XDG_")})

    source, out = where / "src", where / "dist"
    subprocess.run(
        ["git", "clone", "--quiet", "--shared", "--branch", tag, str(repo), str(source)],
        env={**env, "GIT_CONFIG_PARAMETERS": "'advice.detachedHead=false'"},
        check=True,
        capture_output=True,
        timeout=60,
    )
    command = ["nice", "-n", "10", sys.executable, "-m", "build", "--sdist", "--wheel"]
    command += ["--outdir", str(out), str(source)]
    started = time.monotonic()
    done = subprocess.run(
        command, env=environment, cwd=source, capture_output=True, text=True, timeout=900
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -m build failed:\n{done.stdout[-2000:]}\n{done.stderr[-1000:]}")
    made = sorted(p.name for p in out.iterdir())
    if len(made) != 2:
        raise RuntimeError(f"python -m build made {made}")
    return elapsed


def _tag_to_installable(
    daemon: Daemon, scratch: Path, env: dict[str, str], options: WatcherOptions
) -> dict[str, Any]:
    log = options.log
    repo = write_repo(scratch / "tagged", TAGGED, "0.1.0", env)
    git(repo, "tag", "v0.1.0", env=env)
    ctl(daemon, "repos", "add", f"{repo}:{TAGGED}", timeout=60)
    first, _, report = update(daemon, TAGGED)
    if _outcomes(report).get(TAGGED) != "published":
        raise RuntimeError(f"the first build of {TAGGED} failed: {report}")
    log(f"  watcher: first build of {TAGGED} (mirror cloned, backend fetched): {first:.1f} s")
    runs: list[dict[str, float]] = []
    for i in range(max(1, options.tags)):
        version = f"0.{i + 2}.0"
        commit_version(repo, version, env)
        tagged_wall = time.time()
        started = time.monotonic()
        git(repo, "tag", f"v{version}", env=env)
        _, events, report = update(daemon, TAGGED)
        if _outcomes(report).get(TAGGED) != "published":
            raise RuntimeError(f"{TAGGED} {version} was not published: {report}")
        deadline = time.monotonic() + 30
        while not _wheel_listed(daemon, TAGGED, version):
            if time.monotonic() > deadline:
                page = http_get(daemon.port, f"/simple/{TAGGED}/", timeout=30)
                raise RuntimeError(
                    f"/simple/{TAGGED}/ does not list {version} 30 s after done: {page!r:.800}"
                )
            time.sleep(0.01)
        total = time.monotonic() - started
        stages = _stages(events, tagged_wall, time.time())
        build = plain_build(repo, f"v{version}", scratch / "plain" / version, daemon, env)
        run = {
            "total": total,
            "build": build,
            "overhead": total - build,
            # the same, against the daemon's own build of this tag (not a second, separate build)
            "overhead_stages": total - stages["building"],
            **stages,
        }
        runs.append(run)
        log(
            f"  watcher: v{version} tag to installable {total:.2f} s; python -m build alone "
            f"{build:.2f} s; overhead {(total - build) * 1e3:.0f} ms, outside the daemon's "
            f"build stage {run['overhead_stages'] * 1e3:.0f} ms "
            f"(listing {stages['listing'] * 1e3:.0f} ms, fetching {stages['fetching'] * 1e3:.0f} "
            f"ms, building {stages['building']:.2f} s, publishing "
            f"{stages['publishing'] * 1e3:.0f} ms)"
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "tags": len(runs),
        "first_build_s": round(first, 3),
        "tag_total_s": round(median("total"), 3),
        "build_s": round(median("build"), 3),
        "overhead_ms": round(median("overhead") * 1e3, 1),
        "overhead_stages_ms": round(median("overhead_stages") * 1e3, 1),
        "stages_ms": {
            key: round(median(key) * 1e3, 1)
            for key in (
                "before_listing",
                "listing",
                "fetching",
                "building",
                "publishing",
                "after_done",
            )
        },
        "tag_runs": [{k: round(v, 4) for k, v in r.items()} for r in runs],
    }
