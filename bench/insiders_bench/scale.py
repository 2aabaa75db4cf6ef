"""`bench/run.py --scale`: how insidersd's cost grows with the index, from 10k to 1M files.

Each size is a store generated once with the store's own structures (dataset.py, the store alone:
no peer serves these) and kept under bench/.work/scale-*: many projects of 20 versions x 2 files,
and one project of 20,000 files (2,000 at 10k, which could not hold it). For each size, one fresh
insidersd on the store:

- start-up: from the process's start to sd_notify READY=1 (a notify socket of the benchmark's own),
  and to the first 200 on the root index;
- RSS when idle after start, and after serving every page once (root and every project, HTML and
  JSON);
- `insidersctl status` and `insidersctl projects show` of the largest project (median of 3);
- upload to page: uploads with the legacy API one at a time on the otherwise idle store, each a new
  project (the clock runs from the upload's 200 until its page, and the root, serve it) and each a
  new file of the largest project (until its page serves it);
- the mirror: a full copy to a directory (from the daemon's start to the target current), the lag
  of that directory during a burst of uploads, a restore from it (`--restore-from`, to READY); the
  same full copy and restore with a bucket on SeaweedFS. Each step is bounded in time
  (`--scale-mirror-timeout`); a step that did not finish at one size is not tried at the next, nor
  one whose linear projection from the last size exceeds the bound: the output says which.

Uploads are removed from the cached store afterwards (the manifest of the largest project is put
back as it was), so every run measures the same store. Nothing else is removed before the run
ends (the copies, the restored stores, each size's scratch): on a file system that is slow to
create files just after many were removed (ext4 without a journal, as here: bench/README.md),
removing a tree of 10^4-10^6 files made the next step's first tenths the slowest.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import mirror
from .base import PROJECT_BIN, insidersd_argv, isolated_env
from .dataset import BIG, Dataset, Sizes, generate, make_wheel, project_names
from .procs import Server, free_port, wait_idle, wait_serving

# files = 2 x (projects x 20 + big versions): 10k, 100k, 1M.
SIZES: dict[str, Sizes] = {
    "10k": Sizes(projects=200, versions=20, big_versions=1000),
    "100k": Sizes(projects=2000, versions=20, big_versions=10000),
    "1M": Sizes(projects=24500, versions=20, big_versions=10000),
}
ACCEPT_JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
UPLOAD_PREFIX = "benchscale-up"
BURST_PREFIX = "benchscale-burst"
START_TIMEOUT = 600.0


@dataclass
class ScaleOptions:
    sizes: list[str]
    uploads: int = 25
    burst: int = 1000
    mirror: bool = True
    mirror_timeout: float = 300.0
    # The bucket copy one request at a time (concurrency = 1) runs this long at most: its rate
    # is what the parallel copy is compared with.
    serial_seconds: float = 120.0
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


# -- READY -------------------------------------------------------------------------------------


class ReadyListener:
    """A NOTIFY_SOCKET of our own: the monotonic time insidersd sent READY=1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self.ready_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = time.monotonic()

    def wait(self, server: Server, timeout: float) -> float:
        """Seconds from the server's start to READY=1."""
        deadline = time.monotonic() + timeout
        while self.ready_at is None:
            if not server.alive():
                raise RuntimeError(f"insidersd exited before READY:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no READY=1 within {timeout:.0f} s")
            time.sleep(0.01)
        return self.ready_at - server.started

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        self.path.unlink(missing_ok=True)


def start_daemon(
    store: Path, scratch: Path, config: str = "", extra: list[str] | None = None
) -> tuple[Server, int, ReadyListener]:
    port = free_port()
    (scratch / "run" / "insiders").mkdir(parents=True, exist_ok=True)
    config_file = scratch / "xdg" / "xdg_config_home" / "insiders" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config)
    listener = ReadyListener(scratch / "notify.sock")
    env = isolated_env(scratch)
    env["NOTIFY_SOCKET"] = str(listener.path)
    argv = insidersd_argv(port, store, scratch) + (extra or [])
    server = Server("insidersd", argv, log=scratch / "insidersd.log", env=env)
    return server, port, listener


def ctl(scratch: Path, *args: str, timeout: float = 120) -> float:
    """Wall time of one `insidersctl ARGS` against the daemon of `scratch`."""
    argv = [
        str(PROJECT_BIN / "insidersctl"),
        "--runtime-dir",
        str(scratch / "run" / "insiders"),
        *args,
    ]
    started = time.monotonic()
    done = subprocess.run(
        argv, env=isolated_env(scratch), capture_output=True, timeout=timeout, check=False
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"insidersctl {' '.join(args)}: {done.stderr.decode()[-500:]}")
    return seconds


def _median_ctl(scratch: Path, *args: str) -> float:
    ctl(scratch, *args)  # warm the page cache and the client's imports
    return statistics.median(ctl(scratch, *args) for _ in range(3))


# -- upload to page ----------------------------------------------------------------------------


def _upload(client: httpx.Client, token: str, name: str, version: str) -> str:
    filename, content = make_wheel(name, version)
    response = client.post(
        "/legacy/",
        data={
            ":action": "file_upload",
            "name": name,
            "version": version,
            "filetype": "bdist_wheel",
            "protocol_version": "1",
        },
        files={"content": (filename, content, "application/octet-stream")},
        auth=("__token__", token),
    )
    if response.status_code != 200:
        raise RuntimeError(f"upload {filename}: {response.status_code} {response.text[:300]}")
    return filename


def _until_shown(client: httpx.Client, path: str, needle: str, timeout: float = 30.0) -> float:
    """Poll `path` until its body holds `needle`; the monotonic time that answer ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(path)
        now = time.monotonic()
        if response.status_code == 200 and needle in response.text:
            return now
        time.sleep(0.002)
    raise RuntimeError(f"{needle} not on {path} after {timeout:.0f} s")


def _pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def upload_to_page(port: int, token: str, count: int, big: str) -> dict[str, Any]:
    """`count` new projects and `count` new files of `big`, one at a time; ms to served."""
    page_ms: list[float] = []
    root_ms: list[float] = []
    big_ms: list[float] = []
    base = f"http://127.0.0.1:{port}"
    with (
        httpx.Client(base_url=base, timeout=60) as uploader,
        httpx.Client(base_url=base, timeout=60) as reader,
    ):
        for i in range(count):
            name = f"{UPLOAD_PREFIX}-{i:04d}"
            filename = _upload(uploader, token, name, "1.0.0")
            answered = time.monotonic()
            page_ms.append((_until_shown(reader, f"/simple/{name}/", filename) - answered) * 1e3)
            root_ms.append((_until_shown(reader, "/simple/", f'"{name}/"') - answered) * 1e3)
            filename = _upload(uploader, token, big, f"9.0.{i}")
            answered = time.monotonic()
            big_ms.append((_until_shown(reader, f"/simple/{big}/", filename) - answered) * 1e3)
    return {
        "uploads": count,
        "page_p50_ms": round(statistics.median(page_ms), 1),
        "page_p99_ms": round(_pct(page_ms, 0.99), 1),
        "root_p50_ms": round(statistics.median(root_ms), 1),
        "root_p99_ms": round(_pct(root_ms, 0.99), 1),
        "big_page_p50_ms": round(statistics.median(big_ms), 1),
        "big_page_p99_ms": round(_pct(big_ms, 0.99), 1),
    }


def serve_every_page(port: int, names: list[str]) -> float:
    """GET the root and every project's page once, as HTML and as JSON; the seconds it took."""
    paths = ["/simple/"] + [f"/simple/{name}/" for name in names]
    started = time.monotonic()

    def part(chunk: list[str]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for path in chunk:
                for headers in ({}, ACCEPT_JSON):
                    response = client.get(path, headers=headers)
                    if response.status_code != 200:
                        raise RuntimeError(f"{path}: {response.status_code}")

    threads = [threading.Thread(target=part, args=(paths[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def _clean_store(store: Path, big_manifest: bytes | None) -> None:
    """Put the cached store back as generated: no uploaded project, the big project's manifest."""
    packages = store / "packages"
    for entry in packages.iterdir():
        if entry.name.startswith((UPLOAD_PREFIX, BURST_PREFIX)):
            shutil.rmtree(entry, ignore_errors=True)
    if big_manifest is None:
        return
    big = packages / BIG
    (big / ".project.json").write_bytes(big_manifest)
    for path in big.glob("benchpkg_big-9.0.*"):
        path.unlink()


# -- one size: the daemon's own figures --------------------------------------------------------

#: start-ups timed per size (the median is kept): a start is seconds, the machine is shared
STARTS = 3


def read_manifests(store: Path) -> float:
    """Read every manifest once, as a start-up does: the seconds it took with the page cache as
    found. The start-ups timed next then read them from memory, at every size alike (a store
    just generated is in the cache, one the mirror's copies pushed out is not)."""
    started = time.monotonic()
    for entry in os.scandir(store / "packages"):
        manifest = Path(entry.path) / ".project.json"
        if manifest.exists():
            manifest.read_bytes()
    return time.monotonic() - started


def start_once(store: Path, scratch: Path) -> tuple[float, float]:
    """One start of insidersd on the store: seconds to READY, and the CPU seconds it had used by
    then (what other processes on the machine do not change); then it is stopped."""
    server, _, listener = start_daemon(store, scratch)
    try:
        return listener.wait(server, START_TIMEOUT), server.cpu_seconds()
    finally:
        server.stop()
        listener.close()


def measure_daemon(dataset: Dataset, scratch: Path, options: ScaleOptions) -> dict[str, Any]:
    """Long because it is one daemon's life, in order: start, idle, ctl, uploads, every page."""
    store = dataset.store
    big_manifest = (store / "packages" / BIG / ".project.json").read_bytes()
    _clean_store(store, big_manifest)
    figures: dict[str, Any] = {"loadavg": round(os.getloadavg()[0], 2)}
    figures["manifests_read_s"] = round(read_manifests(store), 2)
    starts = [start_once(store, scratch / f"start-{i}") for i in range(STARTS - 1)]
    server, port, listener = start_daemon(store, scratch)
    try:
        starts.append((listener.wait(server, START_TIMEOUT), server.cpu_seconds()))
        readies = [wall for wall, _ in starts]
        figures["ready_all_s"] = [round(r, 2) for r in readies]
        figures["ready_s"] = round(statistics.median(readies), 2)
        figures["ready_cpu_s"] = round(statistics.median(cpu for _, cpu in starts), 2)
        figures["first_200_s"] = round(wait_serving(server, port, "/simple/", timeout=60), 2)
        wait_idle(server, limit=30)
        figures["rss_idle_mb"] = round(server.rss_kb() / 1024, 1)
        options.log(
            f"  manifests read (page cache as found) in {figures['manifests_read_s']:.2f} s; "
            f"READY in {figures['ready_s']:.2f} s (median of "
            f"{', '.join(f'{r:.2f}' for r in readies)}; {figures['ready_cpu_s']:.2f} CPU s), "
            f"idle RSS {figures['rss_idle_mb']:.0f} MB; "
            f"load average {figures['loadavg']:.1f}"
        )
        figures["status_ms"] = round(_median_ctl(scratch, "status") * 1e3, 1)
        figures["projects_show_ms"] = round(_median_ctl(scratch, "projects", "show", BIG) * 1e3, 1)
        options.log(
            f"  insidersctl status {figures['status_ms']:.0f} ms, projects show {BIG} "
            f"{figures['projects_show_ms']:.0f} ms"
        )
        token = (store / "upload-token").read_text().strip()
        figures["upload"] = upload_to_page(port, token, options.uploads, BIG)
        up = figures["upload"]
        options.log(
            f"  upload to page p50/p99 {up['page_p50_ms']:.0f}/{up['page_p99_ms']:.0f} ms, "
            f"root {up['root_p50_ms']:.0f}/{up['root_p99_ms']:.0f} ms, largest project's page "
            f"{up['big_page_p50_ms']:.0f}/{up['big_page_p99_ms']:.0f} ms"
        )
        names = [BIG, *project_names(dataset.sizes)]
        figures["every_page_s"] = round(serve_every_page(port, names), 1)
        wait_idle(server, limit=30)
        figures["rss_pages_mb"] = round(server.rss_kb() / 1024, 1)
        options.log(
            f"  every page once ({2 * (len(names) + 1):,} requests) in "
            f"{figures['every_page_s']:.1f} s; RSS after {figures['rss_pages_mb']:.0f} MB"
        )
    finally:
        server.stop()
        listener.close()
        _clean_store(store, big_manifest)
    return figures


# -- one size: the mirror ----------------------------------------------------------------------


def _rate_drift(samples: list[tuple[float, int]]) -> float | None:
    """Requests/s in the last quarter of a copy over the first quarter's (1.0: constant)."""
    if len(samples) < 8 or samples[-1][1] == 0:
        return None
    start, end = samples[0][0], samples[-1][0]
    quarter = (end - start) / 4

    def rate(lo: float, hi: float) -> float:
        inside = [s for s in samples if lo <= s[0] <= hi]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    first = rate(start, start + quarter)
    return round(rate(end - quarter, end) / first, 2) if first else None


#: the windows a copy's or a restore's per-file rate is measured in (10: first 10%, ..., last 10%)
WINDOWS = 10


def rate_windows(samples: list[tuple[float, int]]) -> list[float] | None:
    """The rate (items/s) in each tenth of the work, from (seconds, items done) samples: the time
    each tenth took, interpolated between samples, from the last sample with nothing done (the
    start-up before the first item is not the copy's rate) to the last item."""
    points = [(t, n) for t, n in samples]
    if len(points) < 4 or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    first = max((i for i, (_, n) in enumerate(points) if n == 0), default=0)
    points = points[first:]

    def when(count: float) -> float:
        for (t0, n0), (t1, n1) in itertools.pairwise(points):
            if n0 <= count <= n1 and n1 > n0:
                return t0 + (t1 - t0) * (count - n0) / (n1 - n0)
        return points[-1][0] if count >= points[-1][1] else points[0][0]

    edges = [when(total * k / WINDOWS) for k in range(WINDOWS + 1)]
    rates = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            return None  # a tenth inside one sampling interval: too short to tell
        rates.append(round(total / WINDOWS / (b - a), 1))
    return rates


def window_spread(rates: list[float] | None) -> float | None:
    """The fastest tenth's rate over the slowest's (1.0: constant from the first item to the
    last)."""
    if not rates or min(rates) <= 0:
        return None
    return round(max(rates) / min(rates), 2)


def item_times(root: Path, wanted: Callable[[str, str], bool]) -> list[float]:
    """The modification time of every regular file under `root` that `wanted(directory, name)`
    takes, sorted: when each was written, read back once the step is over (nothing is sampled
    while the work runs, and the clock is the file system's, per file)."""
    times: list[float] = []
    for directory, _, names in os.walk(root):
        for name in names:
            if not wanted(directory, name):
                continue
            try:
                info = os.stat(os.path.join(directory, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            times.append(info.st_mtime)
    times.sort()
    return times


def _distribution(_directory: str, name: str) -> bool:
    """A store's distribution (not its metadata or manifest)."""
    return not name.startswith(".") and not name.endswith(".metadata")


def _written_by_copy(_directory: str, name: str) -> bool:
    """What one request of a copy to a directory leaves: a file, metadata file or page (a
    page's .gz sibling comes with it; the mark and temp files are nobody's request)."""
    return not name.startswith(".") and not name.endswith(".gz")


def item_windows(times: list[float]) -> list[float] | None:
    """The rate (items/s) in each tenth of the work, from every item's own time: tenth k runs
    from the time the last item of tenth k-1 was done (the first: the first item's) to the time
    its own last item was."""
    count = len(times)
    if count < 2 * WINDOWS:
        return None
    edges = [times[0]]
    for k in range(1, WINDOWS + 1):
        edges.append(times[max(0, round(count * k / WINDOWS) - 1)])
    rates = []
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        items = round(count * (k + 1) / WINDOWS) - round(count * k / WINDOWS)
        if b <= a:
            return None
        rates.append(round(items / (b - a), 1))
    return rates


def times_drift(times: list[float]) -> float | None:
    """The last quarter's rate over the first quarter's (1.0: constant), from every item's time."""
    count = len(times)
    if count < 8:
        return None
    quarter = count // 4
    first = times[quarter - 1] - times[0]
    last = times[-1] - times[count - quarter - 1]
    if first <= 0 or last <= 0:
        return None
    return round(first / last, 2)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


#: how often a running step is looked at (READY, the mirror's state and request count): over
#: the daemon's control socket from this process, which costs the daemon a small reply, not a
#: process started per look (insidersctl, ~0.2 CPU s each, as the steps once polled)
POLL = 0.1


class Control:
    """The daemon's control socket, one connection kept open: `mirrors list` as often as a
    step needs it, for the cost of a reply."""

    def __init__(self, runtime: Path) -> None:
        self.path = runtime / "control.sock"
        self._connection: Any = None

    def mirror(self, name: str) -> Any:
        from insidersctl import protocol
        from insidersctl.client import ClientError, Connection

        for attempt in range(2):
            try:
                if self._connection is None:
                    self._connection = Connection.open(self.path, timeout=30)
                reply = self._connection.call(protocol.ListMirrors(), timeout=60)
                return next(m for m in reply.mirrors if m.name == name)
            except (ClientError, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def restore(config: str, name: str, scratch: Path, files: int, timeout: float) -> dict[str, Any]:
    """`insidersd --restore-from NAME` into an empty data directory: seconds to READY. Nothing
    is counted while it runs: the rate per tenth comes from each restored file's own time
    (written, checked and fsynced in incoming/), read from the store once it is done."""
    store = scratch / "store"
    load_before = _load()
    server, _, listener = start_daemon(store, scratch, config, ["--restore-from", name])
    try:
        deadline = time.monotonic() + timeout
        while listener.ready_at is None and time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"restore from {name} failed:\n{server.log_tail()}")
            time.sleep(POLL)
        finished = listener.ready_at is not None
        seconds = listener.ready_at - server.started if listener.ready_at is not None else timeout
        load_after = _load()
        server.stop()
        times = item_times(store / "packages", _distribution)
        windows = item_windows(times)
        return {
            "finished": finished,
            "seconds": round(seconds, 1) if finished else round(timeout, 0),
            "files": len(times),
            "of": files,
            "files_per_s": round(len(times) / seconds, 1),
            # from the first file fetched to the last: the restore's own rate
            "busy_files_per_s": round(len(times) / (times[-1] - times[0]), 1)
            if len(times) > 1 and times[-1] > times[0]
            else None,
            "rate_drift": times_drift(times),
            "windows": windows,
            "window_spread": window_spread(windows),
            "loadavg": [load_before, load_after],
        }
    finally:
        server.stop()
        listener.close()


def start_copy(
    store: Path,
    scratch: Path,
    config: str,
    name: str,
    timeout: float,
    samples: list[tuple[float, int]],
) -> tuple[Server, int, Path, float, int]:
    """insidersd on the store with one mirror target, until the target is current: the daemon,
    its port and runtime directory, the seconds from its start, the requests made. `samples`
    gets (seconds since the start, requests so far) every POLL seconds. RuntimeError "not
    current after" when the bound passed (the daemon is stopped)."""
    port = free_port()
    runtime = scratch / "run" / "insiders"
    runtime.mkdir(parents=True, exist_ok=True)
    config_file = scratch / "xdg" / "xdg_config_home" / "insiders" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config)
    argv = insidersd_argv(port, store, scratch)
    argv[argv.index("--log-level") + 1] = "info"
    server = Server("insidersd", argv, log=scratch / "insidersd.log", env=isolated_env(scratch))
    control = Control(runtime)
    try:
        wait_serving(server, port, "/simple/", timeout=600)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"insidersd exited:\n{server.log_tail()}")
            mirror = control.mirror(name)
            now = time.monotonic() - server.started
            samples.append((now, int(mirror.requests)))
            if mirror.state == "failing":
                raise RuntimeError(f"mirror {name}: {mirror.last_error}")
            if (
                mirror.state == "idle"
                and mirror.last_sync
                and not mirror.pending
                and not mirror.full_sync_pending
            ):
                return server, port, runtime, now, int(mirror.requests)
            time.sleep(POLL)
        raise RuntimeError(f"mirror {name} not current after {timeout:.0f} s")
    except BaseException:
        server.stop()
        raise
    finally:
        control.close()


def full_copy(
    store: Path, scratch: Path, config: str, name: str, timeout: float, tree: Path | None = None
) -> tuple[dict[str, Any], tuple[Server, int, Path] | None]:
    """A full copy by a fresh insidersd; the copy's figures and the still running daemon.

    The rate per tenth of a copy to a directory (`tree`) comes from each file's and page's own
    time, read back once the copy is current; a bucket's from the request count, looked at
    every POLL seconds (a tenth lasts seconds)."""
    samples: list[tuple[float, int]] = []
    load_before = _load()
    try:
        daemon, port, runtime, seconds, requests = start_copy(
            store, scratch, config, name, timeout, samples
        )
    except RuntimeError as error:
        if "not current after" not in str(error):
            raise
        done = samples[-1][1] if samples else 0
        busy = samples[-1][0] - _started(samples) if samples else timeout
        times = item_times(tree, _written_by_copy) if tree is not None else []
        windows = item_windows(times) if times else rate_windows(samples)
        return {
            "finished": False,
            "seconds": round(timeout, 0),
            "requests": done,
            "requests_per_s": round(done / busy, 1) if busy > 0 else None,
            "rate_drift": times_drift(times) if times else _rate_drift(samples),
            "windows": windows,
            "window_spread": window_spread(windows),
            "loadavg": [load_before, _load()],
        }, None
    load_after = _load()
    times = item_times(tree, _written_by_copy) if tree is not None else []
    windows = item_windows(times) if times else rate_windows(samples)
    busy = seconds - _started(samples)
    figures = {
        "finished": True,
        "seconds": round(seconds, 1),
        "requests": requests,
        "requests_per_s": round(requests / busy, 1),
        "rate_drift": times_drift(times) if times else _rate_drift(samples),
        "windows": windows,
        "window_spread": window_spread(windows),
        "loadavg": [load_before, load_after],
    }
    return figures, (daemon, port, runtime)


def _started(samples: list[tuple[float, int]]) -> float:
    """When the copy's requests began (the daemon's start-up before is not the copy's rate)."""
    return max((t for t, n in samples if n == 0), default=0.0)


def measure_mirror(
    dataset: Dataset, scratch: Path, options: ScaleOptions, skip: dict[str, str]
) -> dict[str, Any]:
    """Long because it is four steps in a row, each of which may be skipped or run out of time:
    directory copy (+ lag), restore from it, bucket copy, restore from it."""
    figures: dict[str, Any] = {}
    timeout = options.mirror_timeout
    store = dataset.store
    tree = scratch / "dir" / "tree"
    dir_config = f'[mirrors.dir]\ndirectory = "{tree}"\n'

    def note(step: str, result: dict[str, Any], what: str) -> None:
        figures[step] = result
        load = result.get("loadavg")
        during = f" (load average {load[0]:.1f} -> {load[1]:.1f})" if load else ""
        if result["finished"]:
            options.log(f"  {what}: {result['seconds']:.1f} s{during}")
        else:
            options.log(f"  {what}: not finished within {timeout:.0f} s{during}")
        if result.get("windows"):
            options.log(
                f"    rate per tenth (first to last): "
                f"{', '.join(f'{r:,.0f}' for r in result['windows'])}/s; max/min "
                f"{result['window_spread']:.2f}"
            )

    if "dir_copy" in skip:
        figures["dir_copy"] = {"skipped": skip["dir_copy"]}
        options.log(f"  directory copy: not run, {skip['dir_copy']}")
    else:
        result, running = full_copy(store, scratch / "dir", dir_config, "dir", timeout, tree)
        if running is not None:
            figures["lag"] = burst_after_copy(
                running, store, tree, BURST_PREFIX, "directory", options
            )
        note("dir_copy", result, f"full copy to a directory ({result['requests']:,} requests)")
    if "dir_restore" in skip or not figures["dir_copy"].get("finished"):
        why = skip.get("dir_restore", "the directory copy did not finish")
        figures["dir_restore"] = {"skipped": why}
        options.log(f"  restore from the directory: not run, {why}")
    else:
        result = restore(dir_config, "dir", scratch / "dir-restore", dataset.files, timeout)
        note("dir_restore", result, f"restore from the directory ({result['files']:,} files)")
    if "s3_copy" in skip:
        figures["s3_copy"] = {"skipped": skip["s3_copy"]}
        figures["s3_restore"] = {"skipped": skip["s3_copy"]}
        options.log(f"  copy to SeaweedFS: not run, {skip['s3_copy']}")
        return figures
    with mirror.bench_bucket(scratch) as (weed, s3_config):
        result, running = full_copy(store, scratch / "s3", s3_config("index"), "bucket", timeout)
        if running is not None:
            reader = mirror.bucket_pages(weed.endpoint, "bench", "index")
            figures["s3_lag"] = burst_after_copy(
                running, store, reader, f"{BURST_PREFIX}-s3", "SeaweedFS", options
            )
        note("s3_copy", result, f"full copy to SeaweedFS ({result['requests']:,} requests)")
        # The same copy one request at a time, for as long as it takes to know its rate.
        serial, running = full_copy(
            store, scratch / "s3-serial", s3_config("serial", 1), "bucket", options.serial_seconds
        )
        if running is not None:
            running[0].stop()
        figures["s3_serial"] = serial
        if result.get("requests_per_s") and serial.get("requests_per_s"):
            figures["s3_speedup"] = round(result["requests_per_s"] / serial["requests_per_s"], 2)
        figures["s3_distant"] = distant_copies(store, scratch, s3_config, weed.endpoint, options)
        figures["s3_ceiling"] = mirror.s3_put_ceiling(weed.endpoint, "bench")
        ceiling = figures["s3_ceiling"]
        options.log(
            f"  bare PutObjects, no daemon: {ceiling['serial_per_s']:,.0f}/s one at a time, "
            f"{ceiling['parallel_per_s']:,.0f}/s from 16 threads: x{ceiling['ratio']:.1f}, what "
            "this machine allows at all"
        )
        options.log(
            f"  the same copy one request at a time (concurrency 1): "
            f"{serial['requests_per_s'] or 0:,.1f} requests/s "
            f"({'finished in ' if serial['finished'] else 'measured for '}"
            f"{serial['seconds']:.0f} s); parallel (concurrency 16) "
            f"{result.get('requests_per_s') or 0:,.1f} requests/s: "
            f"x{figures.get('s3_speedup') or 0:.1f}"
        )
        if "s3_restore" in skip or not result["finished"]:
            why = skip.get("s3_restore", "the copy to SeaweedFS did not finish")
            figures["s3_restore"] = {"skipped": why}
            options.log(f"  restore from SeaweedFS: not run, {why}")
        else:
            result = restore(
                s3_config("index"), "bucket", scratch / "s3-restore", dataset.files, timeout
            )
            note("s3_restore", result, f"restore from SeaweedFS ({result['files']:,} files)")
    return figures


def burst_after_copy(
    running: tuple[Server, int, ReadyListener],
    store: Path,
    pages: Path | Callable[[str], str | None],
    prefix: str,
    where: str,
    options: ScaleOptions,
) -> dict[str, Any]:
    """On the daemon a full copy left running: the lag of a burst of uploads to the projects
    PREFIX-0 to -9 until the mirror's `pages` show them (mirror.burst_lag), logged; then the
    daemon is stopped and the store cleaned of what the burst added."""
    daemon, port, _ = running
    try:
        token = (store / "upload-token").read_text().strip()
        projects = [f"{prefix}-{i}" for i in range(10)]
        lag = mirror.burst_lag(port, token, pages, projects, options.burst)
        options.log(
            f"  mirror lag ({where}), burst of {lag['uploads']} uploads in "
            f"{lag['seconds']:.1f} s: p50 {lag['lag_p50_ms']:.0f} ms, p99 "
            f"{lag['lag_p99_ms']:.0f} ms"
        )
        return lag
    finally:
        daemon.stop()
        _clean_store(store, None)


#: what the bucket "in another machine room" adds to each request (a proxy's sleep)
DISTANT_DELAY = 0.02
#: how long each of its two copies runs: their rates are what is compared
DISTANT_SECONDS = 40.0


def distant_copies(
    store: Path,
    scratch: Path,
    config: Callable[..., str],
    endpoint: str,
    options: ScaleOptions,
) -> dict[str, Any]:
    """The bucket copy, 16 requests in flight and one at a time, through a proxy that answers
    each request DISTANT_DELAY late: what parallel writes gain where a request's time is a
    network's latency, not this machine's CPU."""
    from tests.bucket_proxy import BucketProxy

    proxy = BucketProxy(endpoint, DISTANT_DELAY)
    try:
        rates: dict[str, float | None] = {}
        for concurrency in (16, 1):
            result, running = full_copy(
                store,
                scratch / f"s3-distant-{concurrency}",
                config(f"distant{concurrency}", concurrency, proxy.endpoint),
                "bucket",
                DISTANT_SECONDS,
            )
            if running is not None:
                running[0].stop()
            rates[str(concurrency)] = result.get("requests_per_s")
    finally:
        proxy.close()
    parallel, serial = rates["16"], rates["1"]
    ratio = round(parallel / serial, 1) if parallel and serial else None
    options.log(
        f"  through a proxy adding {DISTANT_DELAY * 1e3:.0f} ms per request (a distant bucket): "
        f"{parallel or 0:,.0f} requests/s with 16 in flight, {serial or 0:,.0f} one at a "
        f"time: x{ratio or 0:.1f}"
    )
    return {
        "delay_ms": DISTANT_DELAY * 1e3,
        "parallel_per_s": parallel,
        "serial_per_s": serial,
        "ratio": ratio,
    }


MIRROR_STEPS = ("dir_copy", "dir_restore", "s3_copy", "s3_restore")


def next_skips(
    previous: dict[str, Any], files_before: int, files_next: int, timeout: float, label: str
) -> dict[str, str]:
    """The mirror steps not worth trying at the next size, and why."""
    skip: dict[str, str] = {}
    for step in MIRROR_STEPS:
        figures = previous.get(step, {})
        if "skipped" in figures:
            skip[step] = figures["skipped"]
        elif not figures.get("finished"):
            skip[step] = f"did not finish within {timeout:.0f} s at {label}"
        else:
            projected = figures["seconds"] * files_next / files_before
            if projected > timeout:
                skip[step] = (
                    f"{figures['seconds']:.0f} s at {label}: {projected:.0f} s at this size if "
                    f"linear, over the {timeout:.0f} s bound"
                )
    return skip


# -- the run -----------------------------------------------------------------------------------


def run_scale(work: Path, scratch_root: Path, options: ScaleOptions) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": {}}
    skip: dict[str, str] = {}
    previous: tuple[str, int, dict[str, Any]] | None = None
    for label in options.sizes:
        sizes = SIZES[label]
        root = work / f"scale-{sizes.projects}x{sizes.versions}+{sizes.big_versions}"
        dataset = generate(root, sizes, store_only=True)
        options.log(
            f"{label}: {dataset.files:,} files ({sizes.projects:,} projects x {sizes.versions} "
            f"versions x 2 + {BIG}, {2 * sizes.big_versions:,} files)"
        )
        figures: dict[str, Any] = {
            "files": dataset.files,
            "projects": sizes.projects + 1,
            "largest_project_files": 2 * sizes.big_versions,
        }
        figures.update(measure_daemon(dataset, scratch_root / label / "daemon", options))
        if options.mirror:
            if previous is not None:
                skip = next_skips(
                    previous[2], previous[1], dataset.files, options.mirror_timeout, previous[0]
                )
            try:
                figures["mirror"] = measure_mirror(
                    dataset, scratch_root / label / "mirror", options, skip
                )
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                options.log(f"  mirror: FAILED: {error}")
                figures["mirror"] = {"error": f"failed: {error}"}
            previous = (label, dataset.files, figures["mirror"])
        results["sizes"][label] = figures
    return results


def save(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


# -- the curve ---------------------------------------------------------------------------------

#: (label, how to get it from one size's figures, digits, whether it is one of the issue's targets)
ROWS: list[tuple[str, Callable[[dict[str, Any]], float | None], int]] = [
    ("load average at the start", lambda f: f.get("loadavg"), 1),
    ("manifests read, cache as found (s)", lambda f: f.get("manifests_read_s"), 2),
    ("start to READY, median of 3 (s)", lambda f: f.get("ready_s"), 2),
    ("  CPU used by READY (s)", lambda f: f.get("ready_cpu_s"), 2),
    ("RSS idle (MB)", lambda f: f.get("rss_idle_mb"), 0),
    ("RSS after every page (MB)", lambda f: f.get("rss_pages_mb"), 0),
    ("every page once, HTML+JSON (s)", lambda f: f.get("every_page_s"), 1),
    ("upload to page p50 (ms)", lambda f: f.get("upload", {}).get("page_p50_ms"), 0),
    ("upload to page p99 (ms)", lambda f: f.get("upload", {}).get("page_p99_ms"), 0),
    ("upload to root p50 (ms)", lambda f: f.get("upload", {}).get("root_p50_ms"), 0),
    ("upload to root p99 (ms)", lambda f: f.get("upload", {}).get("root_p99_ms"), 0),
    ("upload to largest page p50 (ms)", lambda f: f.get("upload", {}).get("big_page_p50_ms"), 0),
    ("upload to largest page p99 (ms)", lambda f: f.get("upload", {}).get("big_page_p99_ms"), 0),
    ("insidersctl status (ms)", lambda f: f.get("status_ms"), 0),
    ("projects show, largest (ms)", lambda f: f.get("projects_show_ms"), 0),
]


def _mirror_figure(step: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(figures: dict[str, Any]) -> float | None:
        value = figures.get("mirror", {}).get(step, {})
        return value.get(key) if value.get("finished") or key != "seconds" else None

    return get


def _lag(step: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(figures: dict[str, Any]) -> float | None:
        value: float | None = figures.get("mirror", {}).get(step, {}).get(key)
        return value

    return get


Row = tuple[str, Callable[[dict[str, Any]], float | None], int]


def _target_rows(
    kind: str, lag: str, where: str, to: str, back_from: str, requests_digits: int, *more: Row
) -> list[Row]:
    """One kind of target's rows: the full copy to it (`to` names the target), `more`, the lag of
    the burst of uploads (`where`), the restore from it (`back_from`); the figures KIND_copy,
    LAG and KIND_restore."""
    copy, restore = f"{kind}_copy", f"{kind}_restore"
    return [
        (f"full copy to {to} (s)", _mirror_figure(copy, "seconds"), 1),
        ("  requests/s", _mirror_figure(copy, "requests_per_s"), requests_digits),
        ("  rate per tenth, max/min", _mirror_figure(copy, "window_spread"), 2),
        *more,
        (f"mirror lag p50 (ms), burst, {where}", _lag(lag, "lag_p50_ms"), 0),
        (f"mirror lag p99 (ms), burst, {where}", _lag(lag, "lag_p99_ms"), 0),
        (f"restore from {back_from} (s)", _mirror_figure(restore, "seconds"), 1),
        ("  files/s", _mirror_figure(restore, "files_per_s"), 1),
        ("  rate per tenth, max/min", _mirror_figure(restore, "window_spread"), 2),
    ]


MIRROR_ROWS: list[Row] = [
    *_target_rows("dir", "lag", "directory", "a directory", "the directory", 0),
    *_target_rows(
        "s3",
        "s3_lag",
        "SeaweedFS",
        "SeaweedFS",
        "SeaweedFS",
        1,
        ("  one request at a time, requests/s", _mirror_figure("s3_serial", "requests_per_s"), 1),
        ("  parallel / one at a time", lambda f: f.get("mirror", {}).get("s3_speedup"), 1),
        (
            "  the same, 20 ms away, parallel / one",
            lambda f: f.get("mirror", {}).get("s3_distant", {}).get("ratio"),
            1,
        ),
        (
            "  bare PutObjects, 16 threads / 1",
            lambda f: f.get("mirror", {}).get("s3_ceiling", {}).get("ratio"),
            1,
        ),
    ),
]


#: the rows whose growth is compared with the files' (the issue's "at most linearly")
GROWTH_ROWS = {
    "start to READY, median of 3 (s)",
    "  CPU used by READY (s)",
    "RSS idle (MB)",
    "RSS after every page (MB)",
    "upload to page p99 (ms)",
    "upload to root p99 (ms)",
    "insidersctl status (ms)",
    "projects show, largest (ms)",
}


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The curve: one column per size, then the ratio between consecutive sizes (files' ratio
    in the header: a figure growing linearly with the files grows by that much)."""
    sizes = results["sizes"]
    labels = list(sizes)
    head = ["", *labels]
    for a, b in itertools.pairwise(labels):
        head.append(f"{b}/{a} (files x{sizes[b]['files'] / sizes[a]['files']:.0f})")
    lines = [head]
    rows = [*ROWS, *MIRROR_ROWS]
    for i, (label, get, digits) in enumerate(rows):
        values = [get(sizes[size]) for size in labels]
        # A heading row stays when a row under it (indented) has figures: a restore that did not
        # finish has no time, but its rate.
        group = [values]
        if not label.startswith(" "):
            for _, sub, _ in itertools.takewhile(lambda r: r[0].startswith(" "), rows[i + 1 :]):
                group.append([sub(sizes[size]) for size in labels])
        if all(v is None for vs in group for v in vs):
            continue
        line = [label, *(_fmt(v, digits) for v in values)]
        for a, b in itertools.pairwise(values):
            line.append(f"x{b / a:.2f}" if a and b is not None else "-")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    ]
    return "\n".join(text)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's targets at the largest size measured: (target, figure, PASS/FAIL)."""
    sizes = results["sizes"]
    found: list[tuple[str, str, str]] = []
    if not sizes:
        return found
    largest = max(sizes, key=lambda s: sizes[s]["files"])
    top = sizes[largest]
    at = f"{top['files']:,} files"

    def check(name: str, value: float | None, limit: float, unit: str) -> None:
        if value is None:
            found.append((name, "not measured", "-"))
        else:
            verdict = "PASS" if value < limit else "FAIL"
            found.append((name, f"{value:,.2f} {unit} at {at}", verdict))

    check("start to READY under 10 s", top.get("ready_s"), 10.0, "s")
    check("idle RSS under 1 GB", top.get("rss_idle_mb"), 1024.0, "MB")
    check(
        "upload-to-page p99 under 200 ms, store idle",
        top.get("upload", {}).get("page_p99_ms"),
        200.0,
        "ms",
    )
    mirror_figures = top.get("mirror", {})
    for step, limit in (("lag", 1000.0), ("s3_lag", 2000.0)):
        where = "directory" if step == "lag" else "SeaweedFS"
        lag = mirror_figures.get(step, {})
        check(
            f"mirror lag p99 under {limit / 1000:.0f} s, {where}, burst of "
            f"{lag.get('uploads', '?')}",
            lag.get("lag_p99_ms"),
            limit,
            "ms",
        )
    speedup = mirror_figures.get("s3_speedup")
    if speedup is None:
        found.append(("full copy to SeaweedFS at least 5x one request at a time", "-", "-"))
    else:
        bare = mirror_figures.get("s3_ceiling", {}).get("ratio")
        allowed = f" (bare PutObjects: x{bare:.1f} on this machine)" if bare else ""
        found.append(
            (
                "full copy to SeaweedFS at least 5x one request at a time",
                f"x{speedup:.1f} at {at}{allowed}",
                "PASS" if speedup >= 5 else "FAIL",
            )
        )
    for step, what in (
        ("dir_copy", "full copy to a directory"),
        ("dir_restore", "restore from a directory"),
        ("s3_copy", "full copy to SeaweedFS"),
        ("s3_restore", "restore from SeaweedFS"),
    ):
        spread = mirror_figures.get(step, {}).get("window_spread")
        name = f"{what}: constant per-file rate (tenths within 20%)"
        if spread is None:
            found.append((name, "not measured", "-"))
        else:
            verdict = "PASS" if spread <= 1.2 else "FAIL"
            found.append((name, f"max/min {spread:.2f} at {at}", verdict))
    labels = sorted(sizes, key=lambda s: sizes[s]["files"])
    if len(labels) >= 2:
        a, b = labels[-2], labels[-1]
        files = sizes[b]["files"] / sizes[a]["files"]
        for label, get, _ in ROWS:
            if label not in GROWTH_ROWS:
                continue
            x, y = get(sizes[a]), get(sizes[b])
            if x is None or y is None or not x:
                continue
            growth = y / x
            # Within 20% of linear: two runs of one figure move that much on a shared machine.
            verdict = "PASS" if growth <= files * 1.2 else "FAIL"
            found.append(
                (
                    f"{label}: at most linear {a} -> {b}",
                    f"x{growth:.2f} (files x{files:.0f})",
                    verdict,
                )
            )
    return found


def targets_table(found: list[tuple[str, str, str]]) -> str:
    width = max((len(t[0]) for t in found), default=0)
    return "\n".join(
        f"{verdict:4}  {name.ljust(width)}  {figure}" for name, figure, verdict in found
    )


def summary(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    parts = [
        f"{results.get('timestamp', '?')}: scaling run, {machine.get('cores', '?')} cores, "
        f"load average {machine.get('loadavg_before', '?')} before, "
        f"{machine.get('loadavg_after', '?')} after",
        table(results),
        targets_table(targets(results)),
    ]
    for label, figures in results["sizes"].items():
        for step, value in figures.get("mirror", {}).items():
            if isinstance(value, dict) and "skipped" in value:
                parts.append(f"{label}: {step} not measured: {value['skipped']}")
            elif isinstance(value, dict) and value.get("finished") is False:
                done = value.get("files", value.get("requests"))
                parts.append(
                    f"{label}: {step} did not finish within {value['seconds']:.0f} s "
                    f"({done:,} {'files' if 'files' in value else 'requests'} by then)"
                )
            elif step == "error":
                parts.append(f"{label}: mirror {value}")
    return "\n\n".join(parts)
