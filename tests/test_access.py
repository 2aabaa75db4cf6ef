"""Who may read and upload: read tokens, scoped and expiring tokens, the safe default off loopback,
nginx's auth endpoint, and the reasons refusals give, through real daemons and real clients."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from insiders.http.access import NEEDS_TOKEN, exposure_refusal
from insiders.http.routes import FALLBACK, ROUTES, resolve, route
from tests.support import (
    BIN,
    INSIDERSD,
    Daemon,
    installed_version,
    isolated_env,
    make_wheel,
    pip_install,
    wheel_filename,
)
from tests.test_ctl import as_json, ctl, ok

JSON = "application/vnd.pypi.simple.v1+json"
READ_TOKENS = '[server]\nread-access = "token"\n'
CHALLENGE = 'Basic realm="insiders"'


def start(home: Path, config: str = "", *args: str) -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(config)
    return Daemon(
        home / "daemon", ["--config", str(path), "--upstream-mode", "none", *args]
    ).start()


@pytest.fixture
def private(tmp_path: Path, dists: dict[str, list[Path]]) -> Iterator[Daemon]:
    """A daemon whose reads need a token, hosting Demo_Pkg 1.0.0 (wheel and sdist)."""
    daemon = start(tmp_path / "private", READ_TOKENS)
    for path in dists["demo-1.0"]:
        assert daemon.upload(path).status_code == 200
    yield daemon
    if daemon.proc and daemon.proc.poll() is None:
        daemon.stop()


def read_token(daemon: Daemon, name: str = "reader") -> str:
    return ok(daemon, "tokens", "create", name, "--scope", "read").strip()


def wheel(tmp_path: Path, name: str, version: str) -> Path:
    path = tmp_path / wheel_filename(name, version)
    path.write_bytes(make_wheel(name, version))
    return path


# -- the read gate ----------------------------------------------------------------------------


def test_every_read_needs_a_read_token(private: Daemon, dists: dict[str, list[Path]]) -> None:
    wheel_name = next(p.name for p in dists["demo-1.0"] if p.suffix == ".whl")
    expected = {
        "/": 200,
        "/simple/": 200,
        "/simple/demo-pkg/": 200,
        "/simple/Demo_Pkg/": 301,
        f"/files/demo-pkg/{wheel_name}": 200,
        f"/files/demo-pkg/{wheel_name}.metadata": 200,
        "/pypi/demo-pkg/json": 200,
        "/pypi/demo-pkg/1.0.0/json": 200,
        "/a/page/someone/adds/later": 404,
    }
    reader = read_token(private)
    refused: list[dict[str, object]] = [
        {},
        {"auth": ("__token__", "insiders-not-a-token")},
        {"auth": (reader, "x")},  # the token in the user field: not a read
        {"headers": {"authorization": b"Basic \xff\xfe"}},
        {"headers": {"authorization": "Bearer " + reader}},
    ]
    with httpx.Client(base_url=private.url, timeout=30) as client:
        for path, status in expected.items():
            for options in refused:
                response = client.get(path, **options)  # type: ignore[arg-type]
                assert response.status_code == 401, (path, options)
                assert response.headers["www-authenticate"] == CHALLENGE
                assert reader not in response.text
            assert client.head(path).status_code == 401
            # Any user name: clients vary. An upload token reads too.
            for auth in (("__token__", reader), ("alice", reader), ("__token__", private.token)):
                response = client.get(path, auth=auth, follow_redirects=False)
                assert response.status_code == status, (path, auth, response.text)
    assert reader not in private.log()

    # Revocation is immediate.
    ok(private, "tokens", "revoke", "reader")
    with httpx.Client(base_url=private.url, timeout=30) as client:
        response = client.get("/simple/", auth=("__token__", reader))
    assert response.status_code == 401
    assert "unknown or revoked" in response.text


def test_the_route_table_is_what_the_daemon_gates(private: Daemon) -> None:
    """Each row of insiders.http.routes, asked through the real daemon without credentials: a
    "read" route answers 401 with the challenge, the others reach their handler (which judges its
    own credentials: an upload token, a signature, nginx's question)."""
    reader = read_token(private)
    with httpx.Client(base_url=private.url, timeout=30) as client:
        for row in (*ROUTES, FALLBACK):
            path = row.path.replace("*", "") or "/"
            path = "/nowhere/" if row.path == "*" else path
            if path.endswith("/") and row.path.endswith("*") and path.count("/") >= 2:
                path += "demo-pkg/"
            method = sorted(row.methods)[0] if row.methods else "GET"
            assert route(method, path) is row, (method, path)
            response = client.request(method, path, follow_redirects=False)
            gated = (response.status_code, response.text) == (401, NEEDS_TOKEN + "\n")
            if row.access == "anyone":  # nginx's question: it judges the credentials itself
                granted = client.request(method, path, auth=("__token__", reader))
                assert granted.status_code == 204, row
            else:
                assert gated == (row.access == "read"), (row, response.status_code, response.text)


def test_auth_endpoint_for_nginx(private: Daemon, daemon: Daemon) -> None:
    """GET /-/auth answers nginx's auth_request: 204 for a reader, 401 and the challenge else."""
    reader = read_token(private)
    with httpx.Client(base_url=private.url, timeout=30) as client:
        anonymous = client.get("/-/auth")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == CHALLENGE
        assert client.get("/-/auth", auth=("__token__", "insiders-wrong")).status_code == 401
        granted = client.get("/-/auth", auth=("__token__", reader))
        assert granted.status_code == 204
        assert granted.content == b""
    # Reads open to anyone: anyone passes.
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert client.get("/-/auth").status_code == 204
        assert client.get("/simple/").status_code == 200


def test_expired_token_is_refused_saying_when(tmp_path: Path) -> None:
    data = tmp_path / "d" / "daemon" / "data" / "insiders"
    data.mkdir(parents=True)

    def token(name: str, scope: str, secret: str, expires: float | None) -> dict[str, object]:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return {"name": name, "scope": scope, "sha256": digest, "created": 1e9, "expires": expires}

    (data / "tokens.json").write_text(
        json.dumps(
            {
                "tokens": [
                    token("old-reader", "read", "insiders-old-reader", 1.7e9),
                    token("old-ci", "upload", "insiders-old-ci", 1.7e9),
                ]
            }
        )
    )
    daemon = start(tmp_path / "d", READ_TOKENS)
    try:
        with daemon.client() as client:
            response = client.get("/simple/", auth=("__token__", "insiders-old-reader"))
        assert response.status_code == 401
        assert "Token old-reader expired on 2023-11-14 22:13 UTC" in response.text
        upload = daemon.upload(wheel(tmp_path, "demo", "1.0"), token="insiders-old-ci")
        assert upload.status_code == 403
        assert upload.reason_phrase.startswith("Token old-ci expired on 2023-11-14 22:13 UTC")
        listing = ok(daemon, "tokens", "list")
        assert "expired 2023-11-14 22:13 UTC" in listing
    finally:
        daemon.stop()


def test_insidersd_refuses_to_serve_everyone_beyond_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(INSIDERSD), "--host", "0.0.0.0", "--port", "0", "--upstream-mode", "none"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    said = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(said) == 1, result.stderr
    assert "refusing to serve 0.0.0.0 beyond loopback" in said[0]
    assert 'read-access = "token"' in said[0]
    assert "public = true" in said[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("hosts", "read_access", "public", "refused"),
    [
        (["127.0.0.1"], "anyone", False, False),
        (["127.0.0.2"], "anyone", False, False),
        (["::1"], "anyone", False, False),
        (["[::1]"], "anyone", False, False),
        (["localhost"], "anyone", False, False),
        (["0.0.0.0"], "anyone", False, True),
        (["::"], "anyone", False, True),
        (["192.0.2.7"], "anyone", False, True),
        (["index.example"], "anyone", False, True),  # a name may resolve to anything
        (["127.0.0.1", "192.0.2.7"], "anyone", False, True),  # socket activation: every socket
        (["0.0.0.0"], "token", False, False),
        (["0.0.0.0"], "anyone", True, False),
    ],
)
def test_exposure_rule(hosts: list[str], read_access: str, public: bool, refused: bool) -> None:
    assert (exposure_refusal(hosts, read_access, public) is not None) is refused  # type: ignore[arg-type]


# -- upload tokens: projects, scopes, names ---------------------------------------------------


def test_scoped_upload_tokens_and_uploaded_by(daemon: Daemon, tmp_path: Path) -> None:
    only_demo = ok(daemon, "tokens", "create", "ci-demo", "--project", "Demo").strip()
    reader = read_token(daemon)
    assert daemon.upload(wheel(tmp_path, "demo", "1.0"), token=only_demo).status_code == 200

    other = daemon.upload(wheel(tmp_path, "other", "1.0"), token=only_demo)
    assert other.status_code == 403
    assert other.reason_phrase == (
        "Token ci-demo may not upload to project other (it may upload to: demo)"
    )
    refused = daemon.upload(wheel(tmp_path, "demo", "1.1"), token=reader)
    assert refused.status_code == 403
    assert "Token reader is a read token; uploads need an upload token" in refused.text

    # Who uploaded: the token's name in the JSON API, the log and `projects show`.
    with daemon.client() as client:
        release = client.get("/pypi/demo/json").json()
    assert [f["uploaded_by"] for f in release["urls"]] == ["ci-demo"]
    assert "published demo-1.0-py3-none-any.whl (uploaded with token ci-demo)" in daemon.log()
    assert "ci-demo" in ok(daemon, "projects", "show", "demo")

    listing = ok(daemon, "tokens", "list")
    for secret in (only_demo, reader, daemon.token):
        assert secret not in listing
        assert secret not in json.dumps(as_json(daemon, "tokens", "list"))
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert rows["ci-demo"].split()[1:4] == ["upload", "demo", "never"]
    assert "just now" in rows["ci-demo"]
    assert rows["reader"].split()[1:4] == ["read", "-", "never"]
    tokens = {t["name"]: t for t in as_json(daemon, "tokens", "list")["tokens"]}  # type: ignore[attr-defined]
    assert tokens["ci-demo"]["projects"] == ["demo"]
    assert tokens["ci-demo"]["last_used"] is not None
    assert tokens["reader"]["last_used"] is None  # refused: not a use

    # Last use outlives the daemon: written at the latest when it stops.
    daemon.stop()
    saved = msgspec.json.decode((daemon.data_dir / "tokens.json").read_bytes())
    assert {t["name"]: t.get("last_used") is not None for t in saved["tokens"]} == {
        "default": False,
        "ci-demo": True,
        "reader": False,
    }


def test_token_in_the_user_field_is_never_echoed(daemon: Daemon, tmp_path: Path) -> None:
    """Issue 15, finding 3: `-u "$TOKEN" -p x` used to be quoted in the 403 and the log."""
    response = daemon.upload(wheel(tmp_path, "demo", "1.0"), token="x")
    assert response.status_code == 403
    with daemon.client() as client:
        swapped = client.post(
            "/legacy/",
            data={":action": "file_upload", "name": "demo", "version": "1.0"},
            files={"content": ("demo-1.0-py3-none-any.whl", make_wheel("demo", "1.0"))},
            auth=(daemon.token, "x"),
        )
    assert swapped.status_code == 403
    assert "Use the user name __token__, and the token as the password" in swapped.text
    assert daemon.token not in swapped.text
    assert daemon.token not in (swapped.reason_phrase or "")
    assert daemon.token not in daemon.log()


def test_token_expiry_and_projects_from_insidersctl(daemon: Daemon) -> None:
    created = as_json(daemon, "tokens", "create", "later", "--expires", "2099-01-31")
    midnight = datetime(2099, 1, 31, tzinfo=UTC).timestamp()
    assert created["token"]["expires"] == midnight  # type: ignore[index]
    month = as_json(daemon, "tokens", "create", "month", "--expires", "30d")["token"]
    assert month["expires"] - month["created"] == pytest.approx(30 * 86400, abs=120)  # type: ignore[index,operator]
    assert "2099-01-31 00:00 UTC" in ok(daemon, "tokens", "list")
    past = ctl(daemon, "tokens", "create", "past", "--expires", "2001-01-01")
    assert past.returncode == 2
    assert "--expires 2001-01-01: that is in the past" in past.stderr
    bad = ctl(daemon, "tokens", "create", "bad", "--expires", "soon")
    assert bad.returncode == 2
    assert "give a lifetime (30d, 12h, 2w, 90m) or a date" in bad.stderr
    read_limited = ctl(daemon, "tokens", "create", "r", "--scope", "read", "--project", "x")
    assert read_limited.returncode == 1
    assert "--project limits an upload token" in read_limited.stderr


def test_revoking_the_first_token_removes_its_file(daemon: Daemon) -> None:
    """Issue 15, finding 10: the upload-token file kept a revoked secret."""
    secret_file = daemon.data_dir / "upload-token"
    ok(daemon, "tokens", "create", "ci")
    ok(daemon, "tokens", "revoke", "ci")
    assert secret_file.exists()
    ok(daemon, "tokens", "revoke", "default")
    assert not secret_file.exists()
    assert "the token it held is revoked" in daemon.log()


# -- redirects to the upstream ----------------------------------------------------------------


class Upstream(http.server.ThreadingHTTPServer):
    """A tiny upstream index on loopback that records what each request carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.wheel = make_wheel("extern", "1.0")
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)

    @property
    def index(self) -> str:
        return f"http://localhost:{self.server_address[1]}/simple/"


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        name = wheel_filename("extern", "1.0")
        if self.path.rstrip("/") == "/simple/extern":
            body, kind = f'<a href="/files/{name}">{name}</a>'.encode(), "text/html"
        elif self.path == f"/files/{name}":
            body, kind = self.server.wheel, "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_redirects_to_the_upstream_never_carry_credentials(tmp_path: Path) -> None:
    upstream = Upstream()
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    daemon = Daemon(
        tmp_path / "d",
        ["--config", str(tmp_path / "c.toml"), "--upstream", upstream.index],
    )
    (tmp_path / "c.toml").write_text(READ_TOKENS)
    daemon.start()
    try:
        reader = read_token(daemon)
        with daemon.client() as client:
            response = client.get("/simple/extern/", auth=("__token__", reader))
        assert response.status_code == 302
        assert response.headers["location"] == f"{upstream.index}extern/"
        index = daemon.index.replace("http://", f"http://__token__:{reader}@")
        pip_install(index, tmp_path / "t", "extern")
        assert (tmp_path / "t" / "extern").is_dir()
        assert upstream.seen, "pip never reached the upstream"
        for path, authorization in upstream.seen:
            assert authorization is None, path
            assert reader not in path
    finally:
        daemon.stop()
        upstream.shutdown()
        upstream.server_close()


# -- real clients with credentials -------------------------------------------------------------


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def consumer(where: Path, extra: str = "") -> Path:
    """A project that depends on demo-pkg, for poetry and pdm."""
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(
        '[project]\nname = "consumer"\nversion = "0.1"\nrequires-python = ">=3.11,<4"\n'
        'dependencies = ["demo-pkg"]\n' + extra
    )
    return where


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@pytest.mark.parametrize("client", ["pip-url", "pip-netrc", "uv-url", "uv-env", "poetry", "pdm"])
def test_clients_read_with_a_token(private: Daemon, tmp_path: Path, client: str) -> None:
    """Each client, given a read token its own way, installs from the private index."""
    reader = read_token(private)
    host = private.url.removeprefix("http://")
    with_secret = f"http://__token__:{reader}@{host}/simple/"
    home = tmp_path / client
    home.mkdir()
    env = isolated_env(home)
    target = home / "target"
    uv = [str(BIN / "uv"), "pip", "install", "--no-config", "--no-cache", "--target", str(target)]
    uv += ["--python", str(BIN / "python")]
    if client == "pip-url":
        pip_install(with_secret, target, "demo-pkg")
    elif client == "pip-netrc":
        netrc = home / ".netrc"
        netrc.write_text(f"machine 127.0.0.1\nlogin __token__\npassword {reader}\n")
        netrc.chmod(0o600)
        pip_install(private.index, target, "demo-pkg")  # pip_install's HOME is target's parent
    elif client == "uv-url":
        run([*uv, "--default-index", with_secret, "demo-pkg"], env)
    elif client == "uv-env":
        env.update(UV_INDEX_INSIDERS_USERNAME="__token__", UV_INDEX_INSIDERS_PASSWORD=reader)
        run([*uv, "--default-index", f"insiders={private.index}", "demo-pkg"], env)
    elif client == "poetry":
        project = consumer(
            home / "project",
            '[tool.poetry]\npackage-mode = false\n[[tool.poetry.source]]\nname = "insiders"\n'
            f'url = "{private.index}"\npriority = "primary"\n',
        )
        env.update(
            POETRY_CONFIG_DIR=str(home / "poetry-config"),
            POETRY_CACHE_DIR=str(home / "poetry-cache"),
            POETRY_DATA_DIR=str(home / "poetry-data"),
            POETRY_KEYRING_ENABLED="false",
            POETRY_VIRTUALENVS_IN_PROJECT="true",
        )
        poetry = str(BIN / "poetry")
        run([poetry, "config", "http-basic.insiders", "__token__", reader], env, project)
        run([poetry, "install", "--no-interaction"], env, project)
        target = site_packages(project / ".venv")
    else:
        project = consumer(home / "project", "[tool.pdm]\ndistribution = false\n")
        env.update(
            PDM_HOME=str(home / "pdm"),
            PDM_CACHE_DIR=str(home / "pdm-cache"),
            PDM_CONFIG_FILE=str(home / "pdm-config.toml"),
            PDM_CHECK_UPDATE="false",
        )
        pdm = str(BIN / "pdm")
        for key, value in (("url", private.index), ("username", "__token__"), ("password", reader)):
            run([pdm, "config", f"pypi.{key}", value], env, project)
        run([pdm, "install", "--no-self"], env, project)
        target = site_packages(project / ".venv")
    assert installed_version(target, "demo_pkg") == "1.0.0"
    assert reader not in private.log()


def test_clients_without_a_token_are_refused(private: Daemon, tmp_path: Path) -> None:
    refused = pip_install(private.index, tmp_path / "t", "--no-input", "demo-pkg", check=False)
    assert refused.returncode != 0
    assert "No matching distribution found for demo-pkg" in refused.stderr
    assert not (tmp_path / "t" / "demo_pkg").exists()


# -- answers every client can show --------------------------------------------------------------


def status_line(daemon: Daemon, request: bytes) -> bytes:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_refusal_reason_is_in_the_status_line(daemon: Daemon) -> None:
    """hypercorn writes no reason phrase; http/reason.py puts the refusal's message there."""
    line = status_line(
        daemon,
        b"POST /legacy/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert line.startswith(b"HTTP/1.1 401 Uploads need credentials: user __token__ and an upload")
    # Other answers keep their plain status line, and the private header never leaves.
    with daemon.client() as client:
        response = client.post("/legacy/")
        assert "x-insiders-reason" not in response.headers
        assert client.get("/simple/").reason_phrase == ""


def test_a_websocket_request_gets_a_plain_refusal(private: Daemon, daemon: Daemon) -> None:
    """The index speaks no WebSocket: the gate refuses the handshake, whatever the path, with or
    without read tokens, before any framework answers it with a traceback."""
    for running in (private, daemon):
        for path in ("/", "/simple/", "/project/demo-pkg/", "/pypi/demo-pkg/json", "/nowhere"):
            line = status_line(
                running,
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
            )
            assert line.startswith(b"HTTP/1.1 403"), (path, line)
        running.stop()
        assert "Traceback" not in running.log()


REFUSED = "Token elsewhere may not upload to project {name} (it may upload to: elsewhere)"


@pytest.mark.parametrize("client", ["hatch", "pdm", "flit", "twine"])
def test_publishing_clients_print_the_reason(
    daemon: Daemon, dists: dict[str, list[Path]], tmp_path: Path, client: str
) -> None:
    # A token limited to another project: each client is refused, and must say why.
    token = ok(daemon, "tokens", "create", "elsewhere", "--project", "elsewhere").strip()
    env = isolated_env(tmp_path)
    legacy = f"{daemon.url}/legacy/"
    files = [str(p) for p in dists["demo-1.0"]]
    name = "demo-pkg"
    if client == "hatch":
        config = tmp_path / "hatch.toml"
        config.touch()
        env.update(
            HATCH_CONFIG=str(config),
            HATCH_DATA_DIR=str(tmp_path / "hatch-data"),
            HATCH_CACHE_DIR=str(tmp_path / "hatch-cache"),
        )
        command = [str(BIN / "hatch"), "publish", "-n", "-r", legacy, "-u", "__token__"]
        command += ["-a", token, *files]
        cwd = tmp_path
    elif client == "pdm":
        cwd = tmp_path / "pdm-project"
        (cwd / "dist").mkdir(parents=True)
        for path in dists["demo-1.0"]:
            (cwd / "dist" / path.name).write_bytes(path.read_bytes())
        (cwd / "pyproject.toml").write_text('[project]\nname = "Demo_Pkg"\nversion = "1.0.0"\n')
        env.update(
            PDM_HOME=str(tmp_path / "pdm"),
            PDM_CACHE_DIR=str(tmp_path / "pdm-cache"),
            PDM_CONFIG_FILE=str(tmp_path / "pdm-config.toml"),
            PDM_CHECK_UPDATE="false",
        )
        command = [str(BIN / "pdm"), "publish", "--no-build", "-r", legacy]
        command += ["-u", "__token__", "-P", token]
    elif client == "flit":
        cwd = tmp_path / "flit-project"
        (cwd / "demo_flit").mkdir(parents=True)
        (cwd / "demo_flit" / "__init__.py").write_text('"""A demo."""\n__version__ = "1.0"\n')
        (cwd / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
            '[project]\nname = "demo-flit"\nversion = "1.0"\ndescription = "A demo"\n'
        )
        env.update(FLIT_INDEX_URL=legacy, FLIT_USERNAME="__token__", FLIT_PASSWORD=token)
        command = [str(BIN / "flit"), "publish", "--format", "wheel"]
        name = "demo-flit"
    else:
        command = [str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar"]
        command += ["--repository-url", legacy, "-u", "__token__", "-p", token, *files]
        cwd = tmp_path
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    printed = " ".join((result.stdout + result.stderr).split())
    assert "403" in printed
    assert REFUSED.format(name=name) in printed, printed


def test_a_route_whose_handler_is_missing_stops_the_start() -> None:
    """Each row's PART.METHOD is found at start: a part without that method, or a part not handed
    over, is named in the refusal instead of failing at the row's first request."""

    class Index:
        async def simple(self, scope: object, receive: object, send: object) -> None: ...

    async def app(scope: object, receive: object, send: object) -> None: ...

    with pytest.raises(ValueError, match=r"routes with no handler: .*index\.file") as refused:
        resolve({"index": Index(), "hooks": app, "auth": app, "web": app})
    assert "index.simple" not in str(refused.value)
    assert "site.home" in str(refused.value)  # a part not handed over at all
