"""What every part of the benchmark shares: where things are, how insidersd is started, and a
started server (`Running`). It imports no other module of the benchmark's, so that any may use it.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import Server

BENCH_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = BENCH_DIR.parent
PROJECT_BIN = Path(sys.executable).parent
PEERS_BIN = BENCH_DIR / ".venv-peers" / "bin"


@dataclass
class Running:
    """A started server and how to address it."""

    server: Server
    port: int
    #: the index URL pip and uv are given (PEP 503 base, ends in /)
    index_path: str
    #: the project's files, for the figures that need them (insidersd: the store's data dir)
    data_dir: Path | None = None
    runtime_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: other processes it needs (insidersd behind the nginx front), stopped with it
    companions: list[Server] = field(default_factory=list)
    #: figures taken while it started (the front: the full copy of the store to its directory)
    figures: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def page(self, project: str = "") -> str:
        return f"{self.index_path}{project}/" if project else self.index_path


def insidersd_argv(
    port: int, data: Path, scratch: Path, upstream_mode: str | None = "none"
) -> list[str]:
    """insidersd on loopback, its data in `data`, its cache and runtime directories under
    `scratch`, warnings only; `upstream_mode` None leaves the mode to insidersd's default."""
    mode = ["--upstream-mode", upstream_mode] if upstream_mode is not None else []
    return [
        str(PROJECT_BIN / "insidersd"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--cache-dir",
        str(scratch / "cache"),
        "--runtime-dir",
        str(scratch / "run" / "insiders"),
        *mode,
        "--log-level",
        "warning",
    ]


def isolated_env(scratch: Path) -> dict[str, str]:
    """The environment with XDG directories of its own, so no user config is read."""
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(scratch / "xdg" / var.lower())
    env["XDG_RUNTIME_DIR"] = str(scratch / "run")
    for var in ("STATE_DIRECTORY", "CACHE_DIRECTORY", "RUNTIME_DIRECTORY", "NOTIFY_SOCKET"):
        env.pop(var, None)
    return env


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


def nginx_server(name: str, scratch: Path, http: str) -> Server:
    """nginx in the foreground, its main config written to scratch/nginx.conf around `http` (what
    goes in its http block: types, maps, servers): its pid, logs and temporary files under
    `scratch`, no access log, sendfile and long keep-alive."""
    conf = scratch / "nginx.conf"
    (scratch / "nginx").mkdir(parents=True, exist_ok=True)
    conf.write_text(
        f"""\
daemon off;
worker_processes auto;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {scratch}/nginx/client;
    proxy_temp_path {scratch}/nginx/proxy;
    fastcgi_temp_path {scratch}/nginx/fastcgi;
    uwsgi_temp_path {scratch}/nginx/uwsgi;
    scgi_temp_path {scratch}/nginx/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
{http}}}
"""
    )
    nginx = nginx_path()
    assert nginx is not None
    return Server(name, [nginx, "-c", str(conf), "-p", str(scratch)], log=scratch / "nginx.log")
