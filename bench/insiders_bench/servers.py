"""The servers measured: how each is set up, started, and addressed.

Every server gets the same files (see dataset.py) and listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    BENCH_DIR,
    PEERS_BIN,
    PROJECT_BIN,
    Running,
    insidersd_argv,
    isolated_env,
    nginx_path,
    nginx_server,
)
from .dataset import Dataset
from .procs import Server, free_port


@dataclass(frozen=True)
class Kind:
    name: str
    setup: str
    start: Callable[[Dataset, Path], Running]
    #: False for the hello-world ceiling, which answers the same bytes on every path
    real_index: bool = True
    #: whether it needs the peers' venv, nginx, ... (a reason it cannot run, or None)
    unavailable: Callable[[], str | None] = lambda: None


# -- insidersd ---------------------------------------------------------------------------------


def start_insidersd(dataset: Dataset, scratch: Path) -> Running:
    port = free_port()
    (scratch / "run" / "insiders").mkdir(parents=True, exist_ok=True)
    server = Server(
        "insidersd",
        insidersd_argv(port, dataset.store, scratch),
        log=scratch / "insidersd.log",
        env=isolated_env(scratch),
    )
    return Running(
        server,
        port,
        "/simple/",
        data_dir=dataset.store,
        runtime_dir=scratch / "run" / "insiders",
    )


# -- the ceiling: a minimal ASGI app on hypercorn's trio worker --------------------------------


def _hypercorn(dataset: Dataset, scratch: Path, name: str, static: bool) -> Running:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env.pop("CEILING_STATIC", None)
    if static:
        env["CEILING_STATIC"] = str(dataset.static)
        env["CEILING_FILES"] = str(dataset.store / "packages")
    argv = [
        str(PROJECT_BIN / "hypercorn"),
        "--worker-class",
        "trio",
        "--bind",
        f"127.0.0.1:{port}",
        "insiders_bench.ceiling:app",
    ]
    server = Server(name, argv, log=scratch / f"{name}.log", env=env, cwd=BENCH_DIR)
    return Running(server, port, "/simple/")


def start_ceiling(dataset: Dataset, scratch: Path) -> Running:
    return _hypercorn(dataset, scratch, "hypercorn-min", static=False)


def start_ceiling_bytes(dataset: Dataset, scratch: Path) -> Running:
    return _hypercorn(dataset, scratch, "hypercorn-bytes", static=True)


# -- nginx on a static tree --------------------------------------------------------------------

NGINX_HTTP = """\
    types {{
        text/html html;
        application/vnd.pypi.simple.v1+json json;
    }}
    default_type application/octet-stream;
    map $http_accept $simple_index {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /simple {{ return 301 /simple/; }}
        location /simple/ {{
            root {static};
            try_files $uri$simple_index =404;
            add_header Vary Accept;
        }}
        location /files/ {{ alias {packages}/; }}
    }}
"""


def start_nginx(dataset: Dataset, scratch: Path) -> Running:
    port = free_port()
    http = NGINX_HTTP.format(port=port, static=dataset.static, packages=dataset.store / "packages")
    return Running(nginx_server("nginx", scratch, http), port, "/simple/")


# -- pypiserver --------------------------------------------------------------------------------

PYPISERVER_WORKERS = 4


def start_pypiserver(dataset: Dataset, scratch: Path) -> Running:
    """Its README's recipes for many packages: pypiserver[cache] (watchdog) under gunicorn -w4."""
    port = free_port()
    app = (
        f"pypiserver:app(roots=[{str(dataset.flat)!r}], authenticate=[], password_file='.', "
        "disable_fallback=True)"
    )
    argv = [
        str(PEERS_BIN / "gunicorn"),
        "--workers",
        str(PYPISERVER_WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]
    server = Server("pypiserver", argv, log=scratch / "pypiserver.log", cwd=scratch)
    return Running(server, port, "/simple/")


# -- devpi-server ------------------------------------------------------------------------------


def devpi_serverdir(dataset: Dataset, log: Callable[[str], None]) -> Path:
    """devpi's own server directory holding the dataset, imported once and then reused."""
    serverdir = dataset.root / "devpi-server"
    marker = serverdir / ".bench-imported"
    source = dataset.root / "dataset.json"
    if marker.exists() and marker.read_text() == source.read_text():
        return serverdir
    shutil.rmtree(serverdir, ignore_errors=True)
    log(f"importing {dataset.files:,} files into devpi-server (devpi-import --hard-links) ...")
    started = time.monotonic()
    done = subprocess.run(
        [
            str(PEERS_BIN / "devpi-import"),
            "--serverdir",
            str(serverdir),
            "--no-root-pypi",
            "--hard-links",
            str(dataset.devpi_export),
        ],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"devpi-import failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    marker.write_text(source.read_text())
    (serverdir / ".bench-import-seconds").write_text(f"{time.monotonic() - started:.1f}")
    log(f"devpi-import took {time.monotonic() - started:.0f} s")
    return serverdir


def start_devpi(dataset: Dataset, scratch: Path) -> Running:
    serverdir = devpi_serverdir(dataset, lambda line: print(line, flush=True))
    port = free_port()
    argv = [
        str(PEERS_BIN / "devpi-server"),
        "--serverdir",
        str(serverdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--offline-mode",
    ]
    server = Server("devpi", argv, log=scratch / "devpi.log")
    running = Running(server, port, "/bench/dev/+simple/")
    seconds = serverdir / ".bench-import-seconds"
    if seconds.exists():
        running.notes.append(f"devpi-import of the dataset took {seconds.read_text()} s (once)")
    return running


def _front() -> Any:
    """The mirror module, imported when used: it imports the tests' nginx helpers."""
    from . import mirror

    return mirror


def _peer(tool: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if (PEERS_BIN / tool).exists():
            return None
        return f"{PEERS_BIN / tool} is missing (make bench sets up bench/.venv-peers)"

    return check


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "insidersd",
            "insidersd (trio + hypercorn, raw ASGI hot routes), --upstream-mode none",
            start_insidersd,
        ),
        Kind(
            "hypercorn-min",
            "minimal ASGI app (constant 14-byte body) on hypercorn -k trio: the stack's ceiling",
            start_ceiling,
            real_index=False,
        ),
        Kind(
            "hypercorn-bytes",
            "minimal ASGI app on hypercorn -k trio answering insidersd's exact bytes from a dict",
            start_ceiling_bytes,
        ),
        Kind(
            "nginx",
            "nginx, static PEP 503/691 tree (the same rendered pages), sendfile: physical limit",
            start_nginx,
            unavailable=lambda: None if nginx_path() else "nginx is not installed",
        ),
        Kind(
            "insidersd-front",
            "insidersd keeping a directory mirror of the store, Debian's nginx in front with the "
            "shipped site config (debian/nginx/insiders-front.conf)",
            lambda dataset, scratch: _front().start_front(dataset, scratch),
            unavailable=lambda: _front().available(),
        ),
        Kind(
            "pypiserver",
            f"pypiserver[cache] (watchdog) under gunicorn -w{PYPISERVER_WORKERS}, as its README "
            "recommends for thousands of packages; flat directory",
            start_pypiserver,
            unavailable=_peer("gunicorn"),
        ),
        Kind(
            "devpi",
            "devpi-server (waitress, 50 threads), private index bench/dev, --offline-mode, "
            "filled by devpi-import --hard-links",
            start_devpi,
            unavailable=_peer("devpi-server"),
        ),
    )
}
