"""Processes the benchmark starts: each in its own process group, all stopped on the way out.

Every server runs in a new session (so its workers and children share one process group), and is
registered until stopped; `stop_all` runs from `finally`, from atexit and on SIGTERM, so an
interrupted benchmark leaves nothing behind. Memory and CPU are read from /proc for the whole group.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# The tests' own (the checkout is on sys.path: run.py puts it there): modules here import it
# from this one.
from tests.support import free_port as free_port

_running: list[Server] = []
#: put in every started server's environment (INSIDERS_BENCH_RUN), so a run's processes can be
#: found from outside, whatever their command lines say (the smoke test checks none is left)
RUN_MARKER = ""


class Server:
    """A started process group with a log file; `stop()` ends the whole group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        environment = dict(env if env is not None else os.environ)
        if RUN_MARKER:
            environment["INSIDERS_BENCH_RUN"] = RUN_MARKER
        self.started = time.monotonic()
        # The child writes its log through a descriptor of its own: ours is closed at once.
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=cwd,
                start_new_session=True,
            )
        self.pgid = self.process.pid
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left after `grace` seconds."""
        if self in _running:
            _running.remove(self)
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not group_pids(self.pgid):
                break
            time.sleep(0.05)
        _signal_group(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def rss_kb(self) -> int:
        """Resident memory of the whole process group (workers included), in KiB."""
        return sum(rss_kb(pid) for pid in group_pids(self.pgid))

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        return sum(_cpu_ticks(pid) for pid in group_pids(self.pgid)) / ticks


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_all() -> None:
    for server in list(reversed(_running)):
        server.stop(grace=5.0)


def _on_sigterm(signum: int, _frame: object) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Stop every started server at exit and on SIGTERM/SIGHUP (Ctrl-C arrives as an exception)."""
    atexit.register(stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_sigterm)
    # A shell starting us in the background hands SIGINT down ignored: make Ctrl-C/kill -INT work.
    signal.signal(signal.SIGINT, signal.default_int_handler)


# -- /proc -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is the state, fields[2] the process group; zombies hold no memory.
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    # utime and stime are fields 14 and 15 of stat, 11 and 12 after the state.
    return int(fields[11]) + int(fields[12]) if fields else 0


def wait_idle(server: Server, *, limit: float = 90.0, quiet: float = 0.05) -> float:
    """Wait until the group uses under `quiet` of a core over half a second (bounded by `limit`).

    Some servers keep working on requests the load generator has abandoned; measuring the next
    endpoint before they finish would charge it for the previous one. Returns the seconds waited.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = server.cpu_seconds()
        time.sleep(0.5)
        if server.cpu_seconds() - before < quiet * 0.5:
            break
    return time.monotonic() - started


# -- HTTP probes -------------------------------------------------------------------------------


def http_get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 60.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def serving(server: Server, port: int, path: str, *, timeout: float) -> Server:
    """`server` once it answers `path` with a 200; stopped if it does not within `timeout`."""
    try:
        wait_serving(server, port, path, timeout=timeout)
    except BaseException:
        server.stop()
        raise
    return server


def wait_serving(server: Server, port: int, path: str, *, timeout: float) -> float:
    """Seconds from the process's start to its first 200 answer for `path`."""
    deadline = server.started + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited ({server.process.returncode}):\n{server.log_tail()}"
            )
        try:
            status, _, _ = http_get(port, path, timeout=max(0.1, deadline - time.monotonic()))
        except (OSError, http.client.HTTPException):
            time.sleep(0.02)
            continue
        if status == 200:
            return time.monotonic() - server.started
        time.sleep(0.02)
    raise RuntimeError(f"{server.name} did not serve {path} within {timeout:.0f} s")
