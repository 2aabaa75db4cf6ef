"""The fallback to an upstream index, against a second real insidersd acting as the upstream."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import INSIDERSD, Daemon, free_port, installed_version, isolated_env, pip_install

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def upstream(tmp_path: Path, dists: dict[str, list[Path]]) -> Iterator[Daemon]:
    """An upstream holding `other-pkg` and a higher `demo-pkg` than the local index."""
    daemon = Daemon(tmp_path / "upstream", ["--upstream-mode", "none"]).start()
    for path in dists["other-0.1"] + dists["demo-1.1"]:
        assert daemon.upload(path).status_code == 200
    yield daemon
    if daemon.proc and daemon.proc.poll() is None:
        daemon.stop()


def local(tmp_path: Path, upstream: Daemon, dists: dict[str, list[Path]], *args: str) -> Daemon:
    daemon = Daemon(tmp_path / "local", ["--upstream", upstream.index, *args]).start()
    for path in dists["demo-1.0"]:
        assert daemon.upload(path).status_code == 200
    return daemon


def installed(daemon: Daemon, target: Path, requirement: str) -> str:
    pip_install(daemon.index, target, requirement)
    return installed_version(target, requirement.split("=")[0].replace("-", "_"))


def test_redirect_mode(tmp_path: Path, upstream: Daemon, dists: dict[str, list[Path]]) -> None:
    daemon = local(tmp_path, upstream, dists)
    try:
        with daemon.client() as client:
            response = client.get("/simple/other-pkg/")
        assert response.status_code == 302
        assert response.headers["location"] == f"{upstream.index}other-pkg/"
        assert installed(daemon, tmp_path / "a", "other-pkg") == "0.1"
        # The hosted project shadows the upstream one, whose version is higher.
        assert installed(daemon, tmp_path / "b", "demo-pkg") == "1.0.0"
    finally:
        daemon.stop()


def test_proxy_mode_serves_last_good_copy(
    tmp_path: Path, upstream: Daemon, dists: dict[str, list[Path]]
) -> None:
    daemon = local(tmp_path, upstream, dists, "--upstream-mode", "proxy")
    try:
        with daemon.client() as client:
            page = client.get("/simple/other-pkg/", headers={"Accept": JSON})
            html = client.get("/simple/other-pkg/", headers={"Accept": "text/html"})
            missing = client.get("/simple/no-such-project/")
        assert page.status_code == 200
        files = page.json()["files"]
        assert {f["filename"] for f in files} == {p.name for p in dists["other-0.1"]}
        assert all(f["url"].startswith(f"{upstream.url}/files/other-pkg/") for f in files)
        assert all(len(f["hashes"]["sha256"]) == 64 for f in files)
        assert f'href="{upstream.url}/files/other-pkg/' in html.text
        assert missing.status_code == 404
        assert installed(daemon, tmp_path / "a", "other-pkg") == "0.1"
        assert installed(daemon, tmp_path / "b", "demo-pkg") == "1.0.0"
    finally:
        daemon.stop()

    # The upstream goes away; a restarted local index still has the page (kept on disk).
    upstream.stop()
    daemon.args += ["--config", str(tmp_path / "ttl.toml")]
    (tmp_path / "ttl.toml").write_text("[upstream]\ncache-ttl = 0.001\n")
    daemon.start()
    try:
        with daemon.client() as client:
            page = client.get("/simple/other-pkg/", headers={"Accept": JSON})
            never_seen = client.get("/simple/never-fetched/")
        assert page.status_code == 200
        assert {f["filename"] for f in page.json()["files"]} == {p.name for p in dists["other-0.1"]}
        assert never_seen.status_code == 502
        assert "upstream" in never_seen.text
        assert "failed" in never_seen.text
        assert "serving the copy from" in daemon.log()
    finally:
        daemon.stop()


def test_merge_lists_upstream_files_after_hosted_ones(
    tmp_path: Path, upstream: Daemon, dists: dict[str, list[Path]]
) -> None:
    config = tmp_path / "merge.toml"
    config.write_text('[projects.demo-pkg]\nupstream = "merge"\n')
    daemon = local(tmp_path, upstream, dists, "--upstream-mode", "proxy", "--config", str(config))
    try:
        with daemon.client() as client:
            page = client.get("/simple/demo-pkg/", headers={"Accept": JSON}).json()
        names = [f["filename"] for f in page["files"]]
        assert names[:2] == sorted(p.name for p in dists["demo-1.0"])
        assert sorted(names[2:]) == sorted(p.name for p in dists["demo-1.1"])
        assert page["versions"] == ["1.0.0", "1.1.0"]
        assert installed(daemon, tmp_path / "a", "demo-pkg") == "1.1.0"
    finally:
        daemon.stop()


def test_none_mode(tmp_path: Path, upstream: Daemon, dists: dict[str, list[Path]]) -> None:
    daemon = local(tmp_path, upstream, dists, "--upstream-mode", "none")
    try:
        with daemon.client() as client:
            assert client.get("/simple/other-pkg/").status_code == 404
    finally:
        daemon.stop()


def test_default_upstream_is_pips_index(tmp_path: Path, upstream: Daemon) -> None:
    daemon = Daemon(tmp_path / "local", env={"PIP_INDEX_URL": upstream.index}).start()
    try:
        with daemon.client() as client:
            response = client.get("/simple/other-pkg/")
        assert response.headers["location"] == f"{upstream.index}other-pkg/"
    finally:
        daemon.stop()


def test_upstream_loop_is_refused(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [str(INSIDERSD), "--port", str(port), "--upstream", f"http://localhost:{port}/simple/"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "is this index itself" in result.stderr


def test_pip_pointing_at_us_is_not_a_loop(tmp_path: Path) -> None:
    """The README tells users to point pip at this index; the daemon must not follow that back."""
    port = free_port()
    daemon = Daemon(tmp_path / "d", env={"PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple/"})
    daemon.start(port=port)
    try:
        with daemon.client() as client:
            location = client.get("/simple/anything/").headers["location"]
        assert f":{port}/" not in location
        assert location.endswith("/anything/")
    finally:
        daemon.stop()
