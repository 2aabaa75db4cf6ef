"""The browser is a client like any other: a web page cannot use the index as the person browsing.

Through real daemons: a DNS-rebinding Host is refused before anything is read, a cross-site
upload with the credentials a browser caches is refused, and the tools (uv publish, twine) that
send no Origin upload as before.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from insiders.http.origin import host_refusal, origin_refusal, own_names
from tests.support import BIN, Daemon, isolated_env, make_wheel, wheel_filename

NAMES = own_names(["index.team.example", "10.1.2.3"], "0.0.0.0")
OURS = frozenset({"https://packages.team.example"})


def scope(method: str = "GET", path: str = "/", **headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": "http",
        "server": ("192.0.2.7", 31411),  # the address the connection came in on
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        ("127.0.0.1:31411", True),
        ("LOCALHOST", True),
        ("[::1]:31411", True),
        ("127.9.9.9", True),  # every loopback address
        ("index.team.example", True),
        ("Index.Team.Example.:443", True),  # case and the root's dot do not matter
        ("10.1.2.3", True),
        ("192.0.2.7:31411", True),  # where the connection came in
        ("192.0.2.8", False),
        ("evil.example", False),
        ("index.team.example.evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_which_hosts_are_this_index(host: str, answered: bool) -> None:
    refusal = host_refusal(scope(host=host), NAMES)
    assert (refusal is None) is answered, refusal
    assert host_refusal(scope(), NAMES) is None  # no Host at all (HTTP/1.0): not a browser


@pytest.mark.parametrize(
    ("request_scope", "allowed"),
    [
        (scope("GET", "/simple/", origin="https://evil.example"), True),  # reads: the Host rule
        (scope("POST", "/legacy/"), True),  # twine, uv, poetry: no Origin
        (scope("POST", "/legacy/", origin="http://127.0.0.1:31411", host="127.0.0.1:31411"), True),
        (scope("POST", "/", origin="https://packages.team.example", host="10.1.2.3"), True),
        (scope("POST", "/", sec_fetch_site="same-origin", origin="http://a:1", host="a:1"), True),
        (scope("POST", "/", sec_fetch_site="none"), True),
        (scope("POST", "/hooks/github", origin="https://evil.example"), True),  # signed
        (scope("POST", "/legacy/", origin="https://evil.example", host="127.0.0.1"), False),
        (scope("POST", "/legacy/", origin="null", host="127.0.0.1"), False),
        (scope("POST", "/legacy/", origin="http://127.0.0.1:1", host="127.0.0.1:2"), False),
        (scope("POST", "/legacy/", sec_fetch_site="cross-site"), False),
        (scope("PUT", "/x", sec_fetch_site="same-site"), False),
    ],
)
def test_which_changes_a_browser_may_send(request_scope: dict[str, object], allowed: bool) -> None:
    refusal = origin_refusal(request_scope, OURS)
    assert (refusal is None) is allowed, refusal


def start(home: Path, config: str = "") -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)
    args = ["--config", str(home / "config.toml"), "--upstream-mode", "none"]
    return Daemon(home / "daemon", args).start()


def get(daemon: Daemon, path: str, host: str) -> httpx.Response:
    with daemon.client() as client:
        return client.get(path, headers={"Host": host})


def test_a_rebinding_host_is_refused(tmp_path: Path) -> None:
    daemon = start(tmp_path)
    try:
        port = daemon.url.rsplit(":", 1)[1]
        # A page of rebind.attacker.example, its name pointed at 127.0.0.1, reads nothing.
        for path in ("/", "/simple/", "/builds/", "/pypi/x/json", "/-/auth"):
            refused = get(daemon, path, f"rebind.attacker.example:{port}")
            assert refused.status_code == 421, (path, refused.status_code)
            assert "does not answer to the host 'rebind.attacker.example'" in refused.text
            assert "allowed-hosts" in refused.text
        # The names this index is: loopback and its address (any port).
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "127.0.0.2"):
            assert get(daemon, "/simple/", host).status_code == 200, host
        # A 60 KB Host is refused with a short message.
        long_host = get(daemon, "/", "a" * 60_000)
        assert long_host.status_code == 421
        assert len(long_host.content) < 1000
    finally:
        daemon.stop()


def test_allowed_hosts_and_public_url_name_the_index(tmp_path: Path) -> None:
    config = (
        '[server]\nallowed-hosts = ["index.team.example", "10.1.2.3"]\n'
        'public-url = "https://packages.team.example/"\n'
    )
    daemon = start(tmp_path, config)
    try:
        for host in ("Index.Team.Example:31411", "10.1.2.3", "packages.team.example"):
            assert get(daemon, "/simple/", host).status_code == 200, host
        assert get(daemon, "/simple/", "team.example").status_code == 421
    finally:
        daemon.stop()
    # A URL is not a host name: the file is refused, naming the key.
    (tmp_path / "bad.toml").write_text('[server]\nallowed-hosts = ["https://x.example/"]\n')
    bad = subprocess.run(
        [str(BIN / "insidersd"), "--config", str(tmp_path / "bad.toml")],
        input="",
        capture_output=True,
        text=True,
        env=isolated_env(tmp_path),
        timeout=30,
    )
    assert bad.returncode == 2
    assert "key `server.allowed-hosts" in bad.stderr


def test_the_address_a_connection_came_in_on_is_a_host(tmp_path: Path) -> None:
    """An address cannot be rebound: a client that names the one it connected to is served,
    with the daemon on every interface (which needs `public = true` with anonymous reads)."""
    daemon = start(tmp_path, '[server]\nhost = "0.0.0.0"\npublic = true\n')
    try:
        port = int(daemon.url.rsplit(":", 1)[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the LAN address
                address = probe.getsockname()[0]
        except OSError:
            pytest.skip("this machine has no address beyond loopback")
        with httpx.Client(timeout=30) as client:
            assert client.get(f"http://{address}:{port}/simple/").status_code == 200
            other = client.get(f"http://{address}:{port}/simple/", headers={"Host": "evil.example"})
            assert other.status_code == 421
            # The name the pages give when the daemon listens everywhere: this machine's.
            named = {"Host": f"{socket.gethostname()}:{port}"}
            assert client.get(f"http://{address}:{port}/simple/", headers=named).status_code == 200
    finally:
        daemon.stop()


def test_a_cross_site_upload_is_refused_and_tools_still_upload(tmp_path: Path) -> None:
    daemon = start(tmp_path)
    try:
        wheel = tmp_path / wheel_filename("cross-site", "1.0")
        wheel.write_bytes(make_wheel("cross-site", "1.0"))
        # What a form on another site makes the browser send: cached Basic credentials, and
        # Origin (every browser), or Sec-Fetch-Site (current ones) saying where it came from.
        for headers in (
            {"Origin": "https://attacker.example"},
            {"Origin": "null"},  # a sandboxed frame, a data: URL
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": daemon.url, "Sec-Fetch-Site": "same-site"},
        ):
            refused = upload(daemon, wheel, headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "may not change this index" in refused.text
        with daemon.client() as client:
            assert client.get("/simple/cross-site/").status_code == 404

        # The index's own origin may (a page of its own); uv publish sends no Origin at all.
        assert upload(daemon, wheel, {"Origin": daemon.url}).status_code == 200
        other = tmp_path / wheel_filename("by-uv", "1.0")
        other.write_bytes(make_wheel("by-uv", "1.0"))
        command = [
            str(BIN / "uv"), "publish", "--no-config", "--publish-url", f"{daemon.url}/legacy/",
            "--username", "__token__", "--password", daemon.token, str(other),
        ]  # fmt: skip
        subprocess.run(
            command,
            env=isolated_env(tmp_path),
            check=True,
            capture_output=True,
            timeout=120,
        )
        with daemon.client() as client:
            assert client.get("/simple/by-uv/").status_code == 200
    finally:
        daemon.stop()


def upload(daemon: Daemon, wheel: Path, headers: dict[str, str]) -> httpx.Response:
    form = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": wheel.name.split("-")[0],
        "version": "1.0",
        "filetype": "bdist_wheel",
    }
    with daemon.client() as client:
        return client.post(
            "/legacy/",
            data=form,
            files={"content": (wheel.name, wheel.read_bytes(), "application/octet-stream")},
            auth=("__token__", daemon.token),
            headers=headers,
        )
