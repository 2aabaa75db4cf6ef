"""Figures from real clients: pip, uv, twine and insidersctl, timed on the wall clock."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import PROJECT_BIN, Running, isolated_env
from .procs import Server


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    # No user or site configuration may redirect the clients to another index or a cache.
    for var in list(env):
        if var.startswith(("PIP_", "UV_")):
            del env[var]
    env.update(
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_CONFIG_FILE=os.devnull,
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    return env


def _timed(argv: Sequence[str], *, env: dict[str, str], timeout: float = 300) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-2000:]}"
        )
    return elapsed


def pip_download(running: Running, requirement: str, repeats: int) -> float:
    """Median wall time of `pip download --no-deps` of one package through the index."""
    env = quiet_env()
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-pip-") as dest:
            times.append(
                _timed(
                    [
                        str(PROJECT_BIN / "pip"),
                        "download",
                        "--no-deps",
                        "--no-cache-dir",
                        "--only-binary=:all:",
                        "--index-url",
                        running.url(running.index_path),
                        "--dest",
                        dest,
                        requirement,
                    ],
                    env=env,
                )
            )
    return statistics.median(times)


def uv_install(running: Running, requirement: str, repeats: int) -> float:
    """Median wall time of `uv pip install` of one package into a fresh venv, no cache."""
    uv = shutil.which("uv", path=str(PROJECT_BIN)) or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not installed")
    env = quiet_env()
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-uv-") as scratch:
            venv = Path(scratch) / "venv"
            subprocess.run([uv, "venv", "--quiet", str(venv)], env=env, check=True, timeout=120)
            times.append(
                _timed(
                    [
                        uv,
                        "pip",
                        "install",
                        "--quiet",
                        "--no-cache",
                        "--python",
                        str(venv / "bin" / "python"),
                        "--index-url",
                        running.url(running.index_path),
                        requirement,
                    ],
                    env=env,
                )
            )
    return statistics.median(times)


# -- upload ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    size_mb: float
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float

    @property
    def growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


class _RssSampler:
    """Samples a server's resident memory every few milliseconds in a thread."""

    def __init__(self, server: Server, interval: float = 0.01) -> None:
        self.server = server
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.server.rss_kb())
            self._stop.wait(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.server.rss_kb())


def upload(running: Running, wheel: Path, token: str) -> UploadResult:
    """Upload `wheel` with twine (it streams the multipart body from disk) and watch RSS."""
    twine = PROJECT_BIN / "twine"
    if not twine.exists():
        raise RuntimeError("twine is not installed in the project's venv")
    before = running.server.rss_kb()
    env = quiet_env()
    argv = [
        str(twine),
        "upload",
        "--disable-progress-bar",
        "--non-interactive",
        "--repository-url",
        running.url("/legacy/"),
        "--username",
        "__token__",
        "--password",
        token,
        str(wheel),
    ]
    with _RssSampler(running.server) as sampler:
        seconds = _timed(argv, env=env, timeout=600)
    return UploadResult(
        size_mb=wheel.stat().st_size / 1e6,
        seconds=seconds,
        rss_before_mb=before / 1024,
        rss_peak_mb=sampler.peak_kb / 1024,
    )


# -- insidersctl -------------------------------------------------------------------------------


def ctl_status(running: Running, scratch: Path, repeats: int) -> tuple[float | None, str]:
    """Median wall time of `insidersctl status` against the running daemon, or None and why not.

    The socket is found the way the daemon puts it: XDG_RUNTIME_DIR/insiders/control.sock (the
    benchmark gives the daemon --runtime-dir XDG_RUNTIME_DIR/insiders). An explicit --socket
    is tried too, for a client that wants one.
    """
    ctl = PROJECT_BIN / "insidersctl"
    if not ctl.exists():
        return None, "n/a (not available): insidersctl is not installed"
    env = isolated_env(scratch)
    assert running.runtime_dir is not None
    socket_path = running.runtime_dir / "control.sock"
    attempts = [[str(ctl), "status"], [str(ctl), "--socket", str(socket_path), "status"]]
    why = ""
    for argv in attempts:
        try:
            _timed(argv, env=env, timeout=30)  # the first run also warms the page cache
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            why = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            continue
        times = [_timed(argv, env=env, timeout=30) for _ in range(repeats)]
        return statistics.median(times), "insidersctl " + " ".join(argv[1:])
    return None, f"n/a (not available): {why[:160]}"
