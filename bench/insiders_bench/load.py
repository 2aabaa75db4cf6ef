"""Load with wrk (Debian's package) on loopback: bounded runs, read into requests/s and latency."""

from __future__ import annotations

import http.client
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ACCEPT_JSON = "application/vnd.pypi.simple.v1+json"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors (timeouts included)

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 3),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
        }


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests_match = re.search(r"(\d+) requests in", output)
    if not rps_match or not requests_match:
        raise ValueError(f"cannot read wrk's output:\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)", output, re.MULTILINE))
    if not percentiles:
        percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        # Read errors are how wrk counts a server closing a kept-alive connection (devpi's
        # "Connection: close"); they are not failed requests, so only the others count.
        errors += int(match.group(1)) + int(match.group(3)) + int(match.group(4))
    requests = int(requests_match.group(1))
    p50 = _ms(percentiles["50"]) if "50" in percentiles and requests else None
    p99 = _ms(percentiles["99"]) if "99" in percentiles and requests else None
    return LoadResult(float(rps_match.group(1)), p50, p99, requests, errors)


def run_wrk(
    url: str,
    *,
    seconds: float,
    threads: int = 2,
    connections: int = 64,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """One bounded wrk run; wrk stops by itself after `seconds` (plus its timeout at worst)."""
    wrk = wrk_path()
    if wrk is None:
        return run_python_load(
            url, seconds=seconds, connections=min(connections, 8), headers=headers
        )
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
    ]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + timeout + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def median_result(results: Sequence[LoadResult]) -> LoadResult:
    """Each figure's median over the runs (so p99 is the median p99, not the p99 of all)."""

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return LoadResult(
        rps=statistics.median(r.rps for r in results),
        p50_ms=med([r.p50_ms for r in results]),
        p99_ms=med([r.p99_ms for r in results]),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
    )


def run_python_load(
    url: str,
    *,
    seconds: float,
    connections: int = 8,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """A stand-in for wrk when it is not installed: keep-alive GETs from threads, bounded in time.

    Far weaker than wrk (the GIL, two cores shared with the server), so its figures are only
    good for the smoke test; the benchmark proper installs wrk.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        mine: list[float] = []
        failed = 0
        try:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    conn.request("GET", path, headers=dict(headers or {}))
                    response = conn.getresponse()
                    response.read()
                    if response.status >= 400:
                        failed += 1
                    if response.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException):
                    failed += 1
                    conn.close()
                    continue
                mine.append((time.monotonic() - started) * 1e3)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                errors[0] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 5)
    elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(share: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))]

    return LoadResult(
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        requests=len(latencies),
        errors=errors[0],
    )
