"""The upstream modes on real installs (`--upstream-cache`): one requirement set, six ways.

A pinned set of popular projects (bench/upstream-requirements.txt, 100+ distributions from 48
requirements) is installed into a fresh venv with `uv pip install` and with pip, neither using a
cache of its own, in rounds; each row is the median of its rounds:

- direct: the client's index is the upstream itself;
- redirect: through insidersd in redirect mode (pages and files then come from the upstream);
- cache, cold: through insidersd in cache mode, its caches empty (a new daemon per client and
  round);
- cache, warm: the same again through the same daemon;
- front, warm: the same through the shipped nginx front, which sends the cached files itself
  (X-Accel-Redirect to [upstream] file-cache-directory);
- unplugged: once the round's relay is stopped (see relay.py: every connection to the upstream
  is refused from then on), the cache daemon started again on its directories with pages already
  stale (cache-ttl 1 s), so that it asks the upstream first, finds it down, and answers from the
  page and file caches. Every install of every row is checked: the venv holds the pinned set.

All the upstream's traffic, the clients' in the direct and redirect rows as the daemons', goes
through the round's relay, which counts the bytes: the upstream MB of each row.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .base import BENCH_DIR, PROJECT_BIN, PROJECT_DIR, insidersd_argv, isolated_env, nginx_server
from .clients import quiet_env
from .procs import Server, free_port, serving
from .relay import Link, Relay

REQUIREMENTS = BENCH_DIR / "upstream-requirements.txt"
#: the environment variable naming the upstream; unset, the daemon's own default is used
UPSTREAM_ENV = "INSIDERS_BENCH_UPSTREAM"
MODES = ("direct", "redirect", "cold", "warm", "front", "unplugged", "floor")
LABELS = {
    "direct": "direct from the upstream",
    "redirect": "insidersd, redirect mode",
    "cold": "insidersd, cache mode, cold",
    "warm": "insidersd, cache mode, warm",
    "front": "nginx front, cache warm",
    "unplugged": "cache warm, upstream unplugged",
    "floor": "floor: the wheels in a directory",
}
CLIENTS = ("uv", "pip")
INSTALL_TIMEOUT = 900.0
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def default_upstream() -> str:
    """$INSIDERS_BENCH_UPSTREAM, else what insidersd itself would use: the index this machine's
    pip is configured with, else pip's own default (insiders.index.upstream.pip_index_url)."""
    configured = os.environ.get(UPSTREAM_ENV, "").strip()
    if configured:
        return configured
    from insiders.index.upstream import pip_index_url

    url = pip_index_url()
    if not url:
        raise RuntimeError(f"no upstream: set {UPSTREAM_ENV} or pass --upstream-url")
    return url


@dataclass
class UpstreamOptions:
    upstream: str
    requirements: Path = REQUIREMENTS
    rounds: int = 3
    clients: Sequence[str] = CLIENTS
    # What stands between this machine and the upstream (relay.Link): nothing, by default.
    link: Link = field(default_factory=Link)
    # The cache daemons' [server] public-url set to the URL each row's clients use (the daemon's,
    # the front's): cache mode's pages then link their files absolutely (see README).
    public_url: bool = True
    log: Callable[[str], None] = lambda line: print(line, flush=True)


@dataclass
class Row:
    times: list[float] = field(default_factory=list)
    upstream_bytes: list[int] = field(default_factory=list)
    runs: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": round(statistics.median(self.times), 2) if self.times else None,
            "times_s": [round(t, 2) for t in self.times],
            "upstream_mb": round(statistics.median(self.upstream_bytes) / 1e6, 1)
            if self.upstream_bytes
            else None,
            "upstream_bytes": int(statistics.median(self.upstream_bytes))
            if self.upstream_bytes
            else None,
            "runs": self.runs,
            "ok": self.ok,
            "failures": self.failures[:3],
        }


def pinned(requirements: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (names normalised, PEP 503)."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[re.sub(r"[-_.]+", "-", name).lower().strip()] = version.split(";")[0].strip()
    return found


# -- the clients -------------------------------------------------------------------------------


def _uv() -> str:
    uv = shutil.which("uv", path=str(PROJECT_BIN)) or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not installed (the dev extra installs it)")
    return uv


def client_env(relay: Relay) -> dict[str, str]:
    """No configuration, index or cache of the user's; the upstream only through the relay."""
    env = {k: v for k, v in quiet_env().items() if k.lower() not in _PROXY_VARS}
    env.update(
        HTTPS_PROXY=relay.url,
        HTTP_PROXY=relay.url,
        https_proxy=relay.url,
        http_proxy=relay.url,
        # The daemons and the front are reached directly; only the upstream is behind the relay.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def install_argv(client: str, index: str | Path, python: Path, requirements: Path) -> list[str]:
    """The client's install; `index` a directory of wheels: no index at all (the floor row)."""
    source = (
        ["--no-index", "--find-links", str(index)]
        if isinstance(index, Path)
        else ["--index-url", index]
    )
    if client == "uv":
        return [
            _uv(), "pip", "install", "--quiet", "--no-cache", "--only-binary", ":all:",
            "--python", str(python), *source, "--requirement", str(requirements),
        ]  # fmt: skip
    # pip compiles the bytecode of what it installed, uv does not (by default): half of pip's
    # floor (15 of 28 s here), the same in every row, and nothing an index can change. Both
    # clients install alike, so that a row's ratio is what its index costs or saves.
    return [
        str(PROJECT_BIN / "python"), "-m", "pip", "--python", str(python), "install", "--quiet",
        "--no-cache-dir", "--no-compile", "--only-binary=:all:", "--progress-bar", "off", *source,
        "--requirement", str(requirements),
    ]  # fmt: skip


def install(
    client: str,
    index: str | Path,
    requirements: Path,
    want: dict[str, str],
    relay: Relay,
    row: Row,
    venvs: Path,
) -> None:
    """One timed install into a fresh venv under `venvs`, checked against the pinned set; into
    `row`. The venv is left for the caller to remove after the last timed install: removing a
    tree of 30,000 files before the next install made that one's file creation two to three
    times as slow on a file system without a journal, which skips every inode freed in the last
    minutes, one by one (`bench/README.md`)."""
    env = client_env(relay)
    venvs.mkdir(parents=True, exist_ok=True)
    venv = Path(tempfile.mkdtemp(prefix=f"{client}-", dir=venvs)) / "venv"
    subprocess.run(
        [_uv(), "venv", "--quiet", str(venv)], env=env, check=True, timeout=120
    )  # fmt: skip
    python = venv / "bin" / "python"
    before = relay.from_upstream
    started = time.monotonic()
    try:
        done = subprocess.run(
            install_argv(client, index, python, requirements),
            capture_output=True,
            text=True,
            env=env,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        row.runs += 1
        row.failures.append(f"timed out after {INSTALL_TIMEOUT:.0f} s")
        return
    elapsed = time.monotonic() - started
    row.runs += 1
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        row.failures.append(f"exit {done.returncode}: {' | '.join(tail)}")
        return
    missing = _missing(venv, want, env)
    if missing:
        row.failures.append(f"installed, but not as pinned: {', '.join(missing[:5])}")
        return
    row.ok += 1
    row.times.append(elapsed)
    row.upstream_bytes.append(relay.from_upstream - before)


def _missing(venv: Path, want: dict[str, str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [_uv(), "pip", "freeze", "--python", str(venv / "bin" / "python")],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    have = pinned_text(done.stdout)
    return sorted(f"{n}=={v}" for n, v in want.items() if have.get(n) != v)


def pinned_text(text: str) -> dict[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
        handle.write(text)
        handle.flush()
        return pinned(Path(handle.name))


# -- the servers -------------------------------------------------------------------------------


@dataclass
class Daemon:
    server: Server
    port: int
    scratch: Path

    @property
    def index(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"


def start_daemon(
    scratch: Path,
    mode: str,
    upstream: str,
    relay: Relay,
    config: str = "",
    *,
    public_url: str | None = None,
) -> Daemon:
    """insidersd in `mode` with the upstream reached only through `relay`. `public_url`: its
    `[server] public-url`, as a team's is set to the URL it serves at (the front's, behind the
    front), where cache mode's pages link the files absolutely; "self": its own address."""
    port = free_port()
    if public_url is not None:
        base = f"http://127.0.0.1:{port}/" if public_url == "self" else public_url
        config = f'[server]\npublic-url = "{base}"\n{config}'
    (scratch / "run" / "insiders").mkdir(parents=True, exist_ok=True)
    config_file = scratch / "xdg" / "xdg_config_home" / "insiders" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config)
    argv = insidersd_argv(port, scratch / "data", scratch)
    argv[argv.index("--upstream-mode") + 1] = mode
    argv += ["--upstream", upstream]
    env = isolated_env(scratch)
    for var in list(env):
        if var.lower() in _PROXY_VARS:
            del env[var]
    env.update(HTTPS_PROXY=relay.url, HTTP_PROXY=relay.url)
    server = Server(f"insidersd-{mode}", argv, log=scratch / "insidersd.log", env=env)
    return Daemon(serving(server, port, "/simple/", timeout=120), port, scratch)


def start_front(
    scratch: Path, daemon: Daemon, files: Path, port: int | None = None
) -> tuple[Server, str]:
    """The shipped front (debian/nginx/insiders-front.conf) before `daemon`, with an empty mirror
    directory (nothing hosted) and its /-/upstream-files/ location on `files`."""
    sys.path.insert(0, str(PROJECT_DIR))
    from tests.fronts import front_site

    port = port or free_port()
    mirror = scratch / "mirror"
    mirror.mkdir(parents=True, exist_ok=True)
    site = front_site(mirror, f"127.0.0.1:{daemon.port}", port, upstream_files=files)
    (scratch / "site.conf").write_text(site)
    server = nginx_server("nginx-front", scratch, f"    include {scratch}/site.conf;\n")
    return serving(server, port, "/simple/", timeout=30), f"http://127.0.0.1:{port}/simple/"


def _readable(path: Path, top: Path) -> None:
    """nginx's workers run as an unprivileged user: open the way down to `path` for them."""
    for directory in [path, *path.parents]:
        directory.chmod(directory.stat().st_mode | 0o755)
        if directory == top:
            break


# -- the run -----------------------------------------------------------------------------------


@dataclass
class _Round:
    """One round's installs: every row but the last with the upstream reachable, then the last."""

    options: UpstreamOptions
    want: dict[str, str]
    rows: dict[str, dict[str, Row]]
    relay: Relay
    venvs: Path  # every install's, removed after the run (see `install`)

    def one(self, client: str, mode: str, index: str | Path, note: str = "") -> None:
        row = self.rows[client][mode]
        ok = row.ok
        install(client, index, self.options.requirements, self.want, self.relay, row, self.venvs)
        figure = f"{row.times[-1]:.1f} s" if row.ok > ok else f"FAILED: {row.failures[-1]}"
        self.options.log(f"  {client:3} {LABELS[mode]:34} {figure}{note}")

    def online(self, client: str, work: Path, redirect: Daemon, scratch: Path) -> Daemon:
        """direct, redirect, cold, warm, floor, front: the cache daemon (stopped) it filled."""
        self.one(client, "direct", self.options.upstream)
        self.one(client, "redirect", redirect.index)
        home = work / f"cache-{client}"
        files = home / "upstream-files"
        files.mkdir(parents=True)
        _readable(files, scratch)
        config = f'[upstream]\nfile-cache-directory = "{files}"\n'
        public = self.options.public_url
        start = partial(start_daemon, home, "cache", self.options.upstream, self.relay, config)
        daemon = start(public_url="self" if public else None)
        try:
            self.one(client, "cold", daemon.index)
            self.one(client, "warm", daemon.index)
            self.one(client, "floor", wheel_directory(files, home / "wheels"))
            front_port = free_port()
            if public:
                # The same directories, the public URL now the front's, as behind a front.
                daemon.server.stop()
                daemon = start(public_url=f"http://127.0.0.1:{front_port}/")
            front, front_index = start_front(work / f"front-{client}", daemon, files, front_port)
            try:
                self.one(client, "front", front_index)
            finally:
                front.stop()
        finally:
            daemon.server.stop()
        return daemon

    def unplugged(self, client: str, cached: Daemon) -> int:
        """The install with the upstream unplugged; how many upstream failures the daemon
        logged meanwhile (it asked, as its pages were stale, and was refused)."""
        files = cached.scratch / "upstream-files"
        config = f'[upstream]\nfile-cache-directory = "{files}"\ncache-ttl = 1.0\n'
        daemon = start_daemon(
            cached.scratch,
            "cache",
            self.options.upstream,
            self.relay,
            config,
            public_url="self" if self.options.public_url else None,
        )
        try:
            time.sleep(1.1)  # every page kept is stale now
            self.one(client, "unplugged", daemon.index)
        finally:
            daemon.server.stop()
        log = (cached.scratch / "insidersd.log").read_text(errors="replace")
        errors = sum("failed" in line for line in log.splitlines())
        self.options.log(f"      the daemon logged {errors} failures to reach the upstream")
        return errors


def wheel_directory(files: Path, into: Path) -> Path:
    """The cached distributions under their own names, in one directory (hard links)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in files.glob("*/*"):
        name = path.name.rsplit(".", 1)[0]  # FILENAME.SHA256
        if not name.startswith(".") and name.endswith((".whl", ".tar.gz", ".zip")):
            os.link(path, into / name)
    return into


def measure_upstream_cache(scratch: Path, options: UpstreamOptions) -> dict[str, Any]:
    """Every row for every client, `options.rounds` times over; the figures as JSON."""
    want = pinned(options.requirements)
    rows = {client: {mode: Row() for mode in MODES} for client in options.clients}
    traffic: dict[str, int] = {"unplugged_upstream_errors": 0}
    for number in range(1, options.rounds + 1):
        options.log(f"round {number}/{options.rounds}")
        work = scratch / f"round-{number}"
        round_ = _Round(options, want, rows, Relay(options.link), scratch / "venvs")
        caches: dict[str, Daemon] = {}
        try:
            redirect = start_daemon(work / "redirect", "redirect", options.upstream, round_.relay)
            try:
                for client in options.clients:
                    caches[client] = round_.online(client, work, redirect, scratch)
            finally:
                redirect.server.stop()
        finally:
            round_.relay.stop()
            for daemon in caches.values():
                daemon.server.stop()
        # The upstream is unplugged from here on: the relay's port refuses every connection.
        for client, cached in caches.items():
            traffic["unplugged_upstream_errors"] += round_.unplugged(client, cached)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "upstream": options.upstream,
        "requirements": {
            "file": options.requirements.name,
            "distributions": len(want),
            "top_level": _top_level(options.requirements),
        },
        "rounds": options.rounds,
        "clients": list(options.clients),
        "file_links": "absolute (public-url)" if options.public_url else "relative",
        "rows": {
            client: {m: r.as_dict() for m, r in modes.items()} for client, modes in rows.items()
        },
        **traffic,
    }


def _top_level(requirements: Path) -> int | None:
    source = requirements.with_suffix(".in")
    if not source.exists():
        return None
    return sum(
        1 for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")
    )


# -- the report --------------------------------------------------------------------------------


def ratio(figures: dict[str, Any], client: str, mode: str, over: str = "direct") -> float | None:
    """The row's time over the direct row's (or `over`'s), round by round, and the median of
    those ratios: the machine's load changes between rounds (it is shared), and a row is
    compared with the direct install of its own round. Runs that failed have no time: then the
    medians' ratio."""
    rows = figures["rows"][client]
    base, this = rows[over], rows[mode]
    if base["ok"] == base["runs"] and this["ok"] == this["runs"] == base["runs"] > 0:
        return statistics.median(
            t / d for t, d in zip(this["times_s"], base["times_s"], strict=True)
        )
    return this["median_s"] / base["median_s"] if base["median_s"] and this["median_s"] else None


def _times(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def table(figures: dict[str, Any]) -> str:
    clients = figures["clients"]
    header = f"{'':34}" + "".join(
        f"{c + ' (s)':>10}{'x direct':>10}{'upstream MB':>13}{'ok':>7}" for c in clients
    )
    notes = "(s): the median of the rounds; x direct: the median of the rounds' ratios"
    lines = [header]
    for mode in MODES:
        line = f"{LABELS[mode]:34}"
        for client in clients:
            row = figures["rows"][client][mode]
            median = "-" if row["median_s"] is None else f"{row['median_s']:.2f}"
            mb = "-" if row["upstream_mb"] is None else f"{row['upstream_mb']:.1f}"
            times = _times(ratio(figures, client, mode))
            line += f"{median:>10}{times:>10}{mb:>13}{row['ok']:>4}/{row['runs']:<2}"
        lines.append(line)
    return "\n".join([*lines, notes])


def targets(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's targets per client: (name, figure, PASS/FAIL)."""
    found = []
    for client in figures["clients"]:
        for mode, limit, name in (
            ("cold", 1.1, "cold within 1.1x of direct"),
            ("warm", 0.5, "warm at least 2x faster than direct"),
            ("front", 0.5, "warm through the front at least 2x faster than direct"),
        ):
            value = ratio(figures, client, mode)
            verdict = "PASS" if value is not None and value <= limit else "FAIL"
            found.append((f"{client}: {name}", _times(value), verdict))
        row = figures["rows"][client]["unplugged"]
        complete = row["runs"] > 0 and row["ok"] == row["runs"]
        found.append(
            (
                f"{client}: warm, upstream unplugged, 100% successful",
                f"{row['ok']}/{row['runs']}",
                "PASS" if complete else "FAIL",
            )
        )
    return found


def floor_shares(figures: dict[str, Any]) -> str:
    """The warm rows over the floor: what the index itself adds to a client's own install (the
    floor bounds how much faster than direct any index can make it)."""
    lines = ["warm over the floor (the same wheels from a directory, no index):"]
    for client in figures["clients"]:
        shares = [
            f"{mode} {_times(ratio(figures, client, mode, over='floor'))}"
            for mode in ("warm", "front", "unplugged")
        ]
        floor = _times(ratio(figures, client, "floor"))
        lines.append(f"  {client:3}  {', '.join(shares)}  (the floor itself: {floor} of direct)")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    figures = results["upstream_cache"]
    machine = results["machine"]
    requirements = figures["requirements"]
    parts = [
        f"{results['timestamp']}: {requirements['top_level']} requirements "
        f"({requirements['distributions']} distributions pinned), {', '.join(figures['clients'])}, "
        f"median of {figures['rounds']} rounds; {machine['cores']} cores, load average "
        f"{machine.get('loadavg_before', '?')} before, {machine.get('loadavg_after', '?')} after; "
        f"upstream {figures['upstream']} through {results.get('link', Link().describe())}; "
        f"cache mode's file links {figures.get('file_links', 'relative')}",
        table(figures),
        "targets:\n" + "\n".join(f"{v:5} {n:60} {f}" for n, f, v in targets(figures)),
        floor_shares(figures),
    ]
    failures = [
        f"{client} {LABELS[mode]}: {why}"
        for client, modes in figures["rows"].items()
        for mode, row in modes.items()
        for why in row["failures"]
    ]
    if failures:
        parts.append("failures:\n" + "\n".join(failures))
    return "\n\n".join(parts)
