"""Build a checked-out tag with PyPA `build` in a subprocess, and check what it made.

The build runs in a sandbox (insiders.watcher.sandbox: it sees nothing of the daemon's and writes
only its scratch directory) inside a box (insiders.watcher.box: its process tree dies with it), at
a lower priority with a time limit; its output goes, redacted, to a log file kept per repository
and version. Build dependencies resolve through this daemon's own
index, so an Insiders build that needs another Insiders package gets it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio
from packaging.version import Version

from insiders.config import SandboxSetting
from insiders.errors import BuildError, InvalidFilename, NoSandbox
from insiders.names import NormalizedName, parse_dist_filename
from insiders.watcher import box, buildlog, sandbox
from insiders.watcher.sandbox import Sandbox


def build_env(
    index_url: str | None, scratch: Path | None = None, epoch: int | None = None
) -> dict[str, str]:
    """A build's whole environment: an allow-list, never the daemon's (its credentials directory,
    SSH agent, cloud keys, notify socket stay out), and everything it writes inside `scratch`."""
    env = {k: v for k, v in os.environ.items() if k in sandbox.PASSED_ENV}
    python_bin = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        HOME=os.environ.get("HOME", "/nonexistent"),
        PYTHONUNBUFFERED="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        # Build dependencies come from this index alone: no pip.conf or uv.toml of the machine's.
        PIP_CONFIG_FILE=os.devnull,
        UV_NO_CONFIG="1",
    )
    if index_url:
        env.update(PIP_INDEX_URL=index_url, UV_INDEX_URL=index_url, UV_DEFAULT_INDEX=index_url)
    if scratch is not None:
        # Everything a build writes stays in its scratch directory (the box allows no other).
        env.update(
            HOME=str(scratch / "home"),
            TMPDIR=str(scratch / "tmp"),
            XDG_CACHE_HOME=str(scratch / "cache"),
            PIP_CACHE_DIR=str(scratch / "cache" / "pip"),
        )
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return env


# The box runs as a script of the standard library alone: `-I` keeps this machine's PYTHON*
# variables and user site out of it.
BOX = Path(box.__file__)
STOP_GRACE = 10.0


async def build(
    source: Path,
    outdir: Path,
    log_path: Path,
    *,
    index_url: str | None,
    sandbox: Sandbox,
    scratch: Path,
    readable: Sequence[Path] = (),
    epoch: int | None = None,
    header: Sequence[str] = (),
) -> list[Path]:
    """Run `python -m build --sdist --wheel` in the sandbox and the box; the files it made, or
    BuildError.

    The sandbox (insiders.watcher.sandbox) lets the build see nothing of the daemon's and write
    only `scratch` (and read `readable`); the box (insiders.watcher.box) kills the build's whole
    process tree when the build ends, when it is cancelled (the caller's deadline, a stop of the
    daemon) and when insidersd dies: its lifeline is a pipe whose write end only this process
    holds. The log starts with the sandbox and `header`, and is stored redacted
    (insiders.watcher.buildlog).
    """
    await trio.Path(outdir).mkdir(parents=True, exist_ok=True)
    await trio.Path(log_path.parent).mkdir(parents=True, exist_ok=True)
    for place in ("tmp", "home"):
        await trio.Path(scratch / place).mkdir(parents=True, exist_ok=True)
    command = ["nice", "-n", "10", sandbox.python, "-m", "build", "--sdist", "--wheel"]
    command += ["--outdir", str(outdir), str(source)]
    env = build_env(index_url, scratch, epoch)
    # Unbuffered: `insidersctl logs --build -f` and the web page follow the log as it grows.
    async with await trio.open_file(log_path, "wb", buffering=0) as log:
        lines = [f"sandbox: {sandbox.describe()}", *header]
        await log.write("".join(f"insiders: {line}\n" for line in lines).encode())
        boxed = sandbox.wrap(command, scratch, readable)
        status = await _run_boxed(sandbox, scratch, boxed, log, env, source)
    if status != 0:
        raise BuildError(f"python -m build failed (exit status {status})")
    return sorted(Path(p) for p in await trio.Path(outdir).iterdir())


async def _run_boxed(
    sandbox: Sandbox,
    scratch: Path,
    command: list[str],
    log: buildlog.AsyncWriter,
    env: dict[str, str],
    cwd: Path,
) -> int:
    """Run `command` (wrapped in the sandbox) in the box, its output copied into `log`; its exit
    status.
    Whatever way this ends, the box is told (the lifeline closes) and what is left of the process
    tree is killed."""
    lifeline, keep_alive = os.pipe()
    # Without a sandbox, Landlock keeps the writes in scratch (bubblewrap mounts, which a
    # Landlock domain forbids, and only mounts scratch writable).
    writable = ["--writable", str(scratch)] if sandbox.kind == "none" else []
    try:
        boxed = [sandbox.python, "-I", str(BOX), *writable, "--lifeline", str(lifeline)]
        process = await trio.lowlevel.open_process(
            [*boxed, "--", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            pass_fds=(lifeline,),
        )
    except BaseException:
        os.close(keep_alive)
        raise
    finally:
        os.close(lifeline)
    assert process.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(buildlog.copy_output, process.stdout, log)
            await process.wait()
    finally:
        # On timeout, on a stop of the daemon, always: the box kills what is left of the build.
        os.close(keep_alive)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
            _kill_group(process.pid)
            await process.wait()
            await process.stdout.aclose()
    return await process.wait()  # done: its exit status at once


async def choose_sandbox(
    setting: SandboxSetting, hidden: Sequence[Path], scratch_root: Path
) -> Sandbox:
    """The sandbox builds run in, or NoSandbox saying what to install or set.

    `auto` and `bubblewrap` both require one that works here (a trial run of the build's Python
    in it, in the box like a build, so nothing of it outlives the daemon): a watched repository's
    code never runs with the daemon's authority unless the configuration says so (`none`).
    """
    if setting == "none":
        return Sandbox("none")
    bwrap = shutil.which(sandbox.BWRAP)
    if bwrap is None:
        raise NoSandbox("bwrap is not installed")
    chosen = Sandbox("bubblewrap", tuple(hidden), bwrap=bwrap)
    await trio.Path(scratch_root).mkdir(parents=True, exist_ok=True)
    scratch = Path(await trio.to_thread.run_sync(partial(tempfile.mkdtemp, dir=scratch_root)))
    said = _Said()
    try:
        command = chosen.wrap([chosen.python, "-I", "-c", ""], scratch)
        status = await _run_boxed(
            chosen, scratch, command, said, {"PATH": "/usr/bin:/bin"}, scratch
        )
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, scratch, True)
    if status != 0:
        lines = said.text().strip().splitlines()
        raise NoSandbox(lines[-1] if lines else f"bwrap exited {status}")
    return chosen


class _Said:
    """What a trial run printed (an AsyncWriter that keeps it)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    async def write(self, data: bytes, /) -> object:
        self._chunks.append(data)
        return len(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def check_dists(files: list[Path], name: NormalizedName, version: Version) -> list[Path]:
    """The built files must be one wheel and one sdist of `name` at `version`, and plain files:
    the daemon reads them outside the sandbox, where a symbolic link would point at its own
    files (or at /dev/zero)."""
    kinds = []
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise BuildError(f"the build made {path.name}, which is not a plain file")
        try:
            dist = parse_dist_filename(path.name)
        except InvalidFilename as error:
            raise BuildError(f"the build made an unexpected file: {error}") from None
        if dist.name != name:
            raise BuildError(
                f"the build made {path.name}, a distribution of {dist.name!r}, "
                f"but this repository is configured for {name!r}"
            )
        if dist.version != version:
            raise BuildError(
                f"the build made {path.name}, version {dist.version}, but the tag says {version}"
            )
        kinds.append(dist.kind)
    if sorted(kinds) != ["sdist", "wheel"]:
        raise BuildError(
            f"expected one sdist and one wheel, the build made {[p.name for p in files]}"
        )
    return files


def build_backend(source: Path) -> str:
    """The build backend a checkout names, and what it requires (blocking; for a build log's
    header): PEP 517's default when pyproject.toml says none, and never that default for a
    pyproject.toml that does not parse (the build fails on it: the header must not send a reader
    looking at setuptools)."""
    try:
        with (source / "pyproject.toml").open("rb") as file:
            system = tomllib.load(file).get("build-system", {})
    except tomllib.TOMLDecodeError as error:
        return f"unknown: pyproject.toml does not parse ({error})"
    except OSError:
        system = {}
    if not isinstance(system, dict):
        system = {}
    backend = system.get("build-backend") or "setuptools.build_meta:__legacy__ (the default)"
    requires = system.get("requires") or ["setuptools"]
    return f"{backend} (requires: {', '.join(map(str, requires))})"
