"""The watcher end to end: real git repositories, real `python -m build`, real daemon and client.

Build dependencies come from a local upstream index serving the wheelhouse `make` downloaded, so
no test build reaches the public network.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.projects import broken_pyproject, in_tree_backend_pyproject
from tests.support import (
    Daemon,
    GoSignal,
    git_project,
    installed_version,
    pip_install,
    run_ctl,
    serve_wheelhouse,
    tag_release,
)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    upstream = Daemon(tmp_path_factory.mktemp("wheelhouse"), ["--upstream-mode", "none"]).start()
    serve_wheelhouse(upstream)
    yield upstream
    upstream.stop()


def gone(pid: int, wait: float = 10) -> bool:
    """The process has ended (a zombie waiting to be reaped counts as ended)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def start(home: Path, wheelhouse: Daemon, config: str = "") -> Daemon:
    (home / "config" / "insiders").mkdir(parents=True, exist_ok=True)
    (home / "config" / "insiders" / "config.toml").write_text(config)
    return Daemon(home, ["--upstream", wheelhouse.index]).start()


@contextlib.contextmanager
def watching(home: Path, wheelhouse: Daemon, config: str = "") -> Iterator[Daemon]:
    """A daemon `start`ed for the length of the block, stopped however the block ends."""
    daemon = start(home, wheelhouse, config)
    try:
        yield daemon
    finally:
        daemon.stop()


def ctl(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """insidersctl that must succeed unless told otherwise (the watcher tests' usual call)."""
    return run_ctl(daemon, *args, check=check)


def watched(daemon: Daemon, src: Path, name: str) -> Path:
    """A git project `name` under `src`, tagged 1.0, added to `daemon`'s repositories and built."""
    repo = git_project(src, name)
    tag_release(repo, "1.0")
    ctl(daemon, "repos", "add", f"{repo}:{name}")
    ctl(daemon, "update", "--wait")
    return repo


def installed(daemon: Daemon, target: Path, requirement: str, *extra: str) -> str:
    pip_install(daemon.index, target, *extra, requirement)
    return installed_version(target, requirement.split("=")[0].replace("-", "_"))


def files_of(daemon: Daemon, project: str) -> dict[str, str]:
    """{filename: sha256} as the index lists them (PEP 691)."""
    with daemon.client() as client:
        response = client.get(
            f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    if response.status_code != 200:  # not hosted: 404, or a redirect to the upstream
        return {}
    return {f["filename"]: f["hashes"]["sha256"] for f in response.json()["files"]}


def logged_pid(log: Path, label: str = "BACKEND PID", wait: float = 120) -> int:
    """The host pid of the process a test build backend named in its build log (it may write
    nowhere else), or -1 when no such process exists any more."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if log.exists() and (match := re.search(rf"{label} (\d+)", log.read_text())):
            # The log is DAEMON_HOME/data/insiders/logs/NAME/VERSION.log.
            return host_pid(int(match.group(1)), log.parents[4])
        time.sleep(0.2)
    raise AssertionError(f"no {label} in {log}")


def host_pid(sandbox_pid: int, home: Path) -> int:
    """The pid on this machine of the build process that calls itself `sandbox_pid` in its
    sandbox's PID namespace (and works in a scratch directory under the daemon's `home`); -1 when
    there is none."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
        if nspid and int(nspid.group(1).split()[-1]) == sandbox_pid and cwd.startswith(str(home)):
            return int(proc.name)
    return -1


def test_sponsor_flow(tmp_path: Path, wheelhouse: Daemon) -> None:
    """repos add, update --wait, pip install; then a new tag reaches pip by the periodic check."""
    # Paused until the first update is done, so that update (not a periodic check) builds 1.0.0.
    config = "[watcher]\ninterval = 1.0\nenabled = false\n"
    with watching(tmp_path / "d", wheelhouse, config) as daemon:
        repo = git_project(tmp_path / "src", "hello-insiders")
        tag_release(repo, "0.9.0")
        tag_release(repo, "1.0.0")
        ctl(daemon, "repos", "add", f"{repo}:hello-insiders")
        update = ctl(daemon, "update", "--wait")
        for stage in ("listing", "fetching", "building", "publishing"):
            assert stage in update.stdout
        assert installed(daemon, tmp_path / "t", "hello-insiders") == "1.0.0"
        # On the first check only the newest version is built.
        with daemon.client() as client:
            assert "0.9.0" not in client.get("/simple/hello-insiders/").text

        ctl(daemon, "watcher", "start")
        tag_release(repo, "1.1.0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
            if repos[0]["last_published"] == "1.1.0":
                break
            time.sleep(0.5)
        assert installed(daemon, tmp_path / "t", "hello-insiders", "--upgrade") == "1.1.0"
        # Later checks build new tags only: the version skipped at the first stays skipped.
        with daemon.client() as client:
            assert "0.9.0" not in client.get("/simple/hello-insiders/").text
        assert (daemon.data_dir / "logs" / "hello-insiders" / "1.1.0.log").exists()


def test_version_from_the_tag_with_hatch_vcs(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "scm-project", scm=True)
        tag_release(repo, "2.3.0")
        ctl(daemon, "repos", "add", str(repo))  # the name is read from the repository
        assert "published 2.3.0" in ctl(daemon, "update", "--wait").stdout
        with daemon.client() as client:
            files = client.get(
                "/simple/scm-project/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
            ).json()["files"]
        assert {f["filename"] for f in files} == {
            "scm_project-2.3.0-py2.py3-none-any.whl",
            "scm_project-2.3.0.tar.gz",
        }


def test_all_versions_and_force_rebuild(tmp_path: Path, wheelhouse: Daemon) -> None:
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "many")
        for version in ("1.0", "1.1", "2.0rc1"):
            tag_release(repo, version)
        ctl(daemon, "repos", "add", "--all", f"{repo}:many")
        # Newest first: the version a sponsor wants most lands first.
        assert "published 2.0rc1, 1.1, 1.0" in ctl(daemon, "update", "--wait").stdout
        assert "up to date" in ctl(daemon, "update", "--wait").stdout.replace("-", " ")
        before = files_of(daemon, "many")
        # --force rebuilds the newest version: the same bytes again, so nothing changes.
        forced = ctl(daemon, "update", "--wait", "--force", "many")
        assert "rebuilt 2.0rc1: identical bytes, nothing changed" in forced.stdout
        assert files_of(daemon, "many") == before


# A build that needs nothing: its backend.py is what the test writes.
SLOW_BUILD = in_tree_backend_pyproject("slow", requires=())


def test_failures_are_recorded_while_others_publish(tmp_path: Path, wheelhouse: Daemon) -> None:
    config = "[watcher]\nenabled = false\nbuild-timeout = 40.0\nmax-builds = 4\n"
    daemon = start(tmp_path / "d", wheelhouse, config)
    src = tmp_path / "src"
    try:
        good = git_project(src, "good")
        tag_release(good, "1.0")
        broken = git_project(src, "broken", pyproject=broken_pyproject("broken"))
        tag_release(broken, "1.0")
        slow = git_project(src, "slow", pyproject=SLOW_BUILD)
        (slow / "backend.py").write_text(
            "import os, time\nprint('BACKEND PID', os.getpid(), flush=True)\ntime.sleep(600)\n"
        )
        tag_release(slow, "1.0")
        misnamed = git_project(src, "misnamed")
        tag_release(misnamed, "1.0")
        for spec in (
            f"{good}:good",
            f"{broken}:broken",
            f"{slow}:slow",
            f"{misnamed}:expected-name",
            "http://127.0.0.1:9/owner/gone.git:gone",
        ):
            ctl(daemon, "repos", "add", spec)
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        assert result.returncode == 1  # some repositories failed
        outcomes = {o["repo"]: o for o in json.loads(result.stdout.splitlines()[-1])["results"]}
        assert outcomes["good"]["outcome"] == "published"
        assert "python -m build failed" in outcomes["broken"]["error"]
        assert "longer than 40 s" in outcomes["slow"]["error"]
        assert "configured for 'expected-name'" in outcomes["expected-name"]["error"]
        assert "git ls-remote failed" in outcomes["gone"]["error"]
        for name in ("broken", "slow", "expected-name"):
            assert Path(outcomes[name]["log"]).exists()
        assert "not a valid requirement" in Path(outcomes["broken"]["log"]).read_text()
        # The failed timeout build left no process behind.
        assert gone(logged_pid(Path(outcomes["slow"]["log"])))
        # The index kept serving, and repos list says what went wrong where.
        assert installed(daemon, tmp_path / "t", "good") == "1.0"
        listing = {
            r["name"]: r for r in json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
        }
        assert "longer than 40 s" in listing["slow"]["last_error"]
        assert listing["good"]["last_error"] is None
    finally:
        daemon.stop()


# hatchling, but naming the sdist as setuptools did before it followed the sdist spec (69.3).
LEGACY_BACKEND = """\
import os
from hatchling.build import *  # noqa: F403
from hatchling.build import build_sdist as _build_sdist


def build_sdist(directory, config_settings=None):
    built = _build_sdist(directory, config_settings)
    legacy = "Mixed-Case-" + built.split("-", 1)[1]
    os.rename(os.path.join(directory, built), os.path.join(directory, legacy))
    return legacy
"""


def test_a_build_named_the_old_way_is_refused_as_an_upload_would_be(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """A build enters the store as an upload does: its file names spelled the normalised way."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        repo = git_project(tmp_path / "src", "Mixed_Case")
        pyproject = (repo / "pyproject.toml").read_text()
        backend = 'build-backend = "backend"\nbackend-path = ["."]'
        (repo / "pyproject.toml").write_text(
            pyproject.replace('build-backend = "hatchling.build"', backend)
        )
        (repo / "backend.py").write_text(LEGACY_BACKEND)
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:mixed-case")
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        assert result.returncode == 1, result.stdout
        [outcome] = json.loads(result.stdout.splitlines()[-1])["results"]
        assert outcome["outcome"] == "failed"
        assert (
            "'Mixed-Case-1.0.tar.gz' does not spell its name and version the normalised way the "
            "specs ask for: name it 'mixed_case-1.0.tar.gz'"
        ) in outcome["error"]
        assert files_of(daemon, "mixed-case") == {}  # the wheel did not go without its sdist


def test_publish_to_another_index_with_credentials(tmp_path: Path, wheelhouse: Daemon) -> None:
    remote = Daemon(tmp_path / "remote", ["--upstream-mode", "none"]).start()
    password = tmp_path / "remote-password"
    password.write_text(remote.token + "\n")
    config = (
        "[watcher]\nenabled = false\n"
        f'[targets.corp]\nurl = "{remote.url}/legacy/"\npassword-file = "{password}"\n'
    )
    daemon = start(tmp_path / "d", wheelhouse, config)
    try:
        repo = git_project(tmp_path / "src", "shared-lib")
        tag_release(repo, "3.0")
        ctl(daemon, "repos", "add", "--publish-to", "corp", f"{repo}:shared-lib")
        ctl(daemon, "update", "--wait")
        assert installed(remote, tmp_path / "r", "shared-lib") == "3.0"
        assert installed(daemon, tmp_path / "l", "shared-lib") == "3.0"
        # A second run finds the files there already: skipped, not an error.
        ctl(daemon, "update", "--wait", "--force", "shared-lib")
    finally:
        daemon.stop()
        remote.stop()


class _AuthRecorder(http.server.BaseHTTPRequestHandler):
    """A git host that demands credentials and refuses them, remembering what it was sent."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_planted_token_never_leaks(tmp_path: Path, wheelhouse: Daemon) -> None:
    """The GitHub token reaches git through its environment only: not argv, logs or replies."""
    token = "ghp_PLANTEDsecretTOKEN1234567890"
    token_file = tmp_path / "github-token"
    token_file.write_text(token)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    github = f"http://127.0.0.1:{server.server_address[1]}"
    config = (
        f'[watcher]\nenabled = false\ngithub-token-file = "{token_file}"\ngithub-url = "{github}"\n'
    )
    daemon = start(tmp_path / "d", wheelhouse, config)
    try:
        ctl(daemon, "repos", "add", "owner/private:private")
        # Another host must never be sent the token.
        ctl(daemon, "repos", "add", f"http://localhost:{server.server_address[1]}/x/y.git:other")
        result = ctl(daemon, "update", "--wait", "--json", check=False)
        status = ctl(daemon, "status", "--json").stdout
        listing = ctl(daemon, "repos", "list", "--json").stdout
        logs = ctl(daemon, "logs", "-n", "200", check=False).stdout
    finally:
        daemon.stop()
        server.shutdown()
        server.server_close()
    outcomes = {o["repo"]: o for o in json.loads(result.stdout.splitlines()[-1])["results"]}
    assert outcomes["private"]["outcome"] == "failed"
    # git did get the token (through GIT_ASKPASS), for the GitHub host only.
    sent = {base64.b64decode(h.split()[1]).decode() for h in _AuthRecorder.seen if h}
    assert sent == {f"x-access-token:{token}"}
    everything = result.stdout + result.stderr + status + listing + logs + daemon.log()
    for path in (daemon.data_dir).rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json"):
            everything += path.read_text(errors="replace")
    assert token not in everything


def test_stop_interrupts_a_build_which_is_retried_after_restart(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    daemon = start(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n")
    # The test says when builds may finish, over the network (a build sees none of its files).
    go = GoSignal()
    repo = git_project(
        tmp_path / "src", "interrupted", pyproject=in_tree_backend_pyproject("interrupted")
    )
    (repo / "backend.py").write_text(
        "import os, time\nfrom hatchling.build import *  # noqa: F403\n"
        + go.code()
        + "if not go_given():\n"
        "    print('BACKEND PID', os.getpid(), flush=True)\n    time.sleep(600)\n"
    )
    tag_release(repo, "1.0")
    try:
        ctl(daemon, "repos", "add", f"{repo}:interrupted")
        ctl(daemon, "update", "--no-wait")
        backend = logged_pid(daemon.data_dir / "logs" / "interrupted" / "1.0.log")
        assert Path(f"/proc/{backend}").exists()
        assert daemon.stop() == 0  # SIGTERM: graceful, exit status 0
        # The build's whole process tree is gone, down to the backend its frontend started.
        assert gone(backend)
        repos = json.loads((daemon.data_dir / "repos.json").read_text())["repos"]
        assert "interrupted" in repos[0]["state"]["last_error"]

        go.give()
        daemon.start()
        assert "published 1.0" in ctl(daemon, "update", "--wait").stdout
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()
        go.close()


def test_a_location_that_looks_like_an_option_runs_nothing(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """`repos add` refuses a leading '-'; a registry written before that rule reaches git after
    `--`, as an operand: git fails to find the repository instead of running a command.

    The daemon runs from a checkout with a remote, as `make run` does: without `--`, git would
    take the location as `--upload-pack=CMD`, list that remote, and run CMD.
    """
    planted = tmp_path / "PWNED"
    evil = f"--upload-pack=touch${{IFS}}{planted}"
    checkout = git_project(tmp_path / "work", "checkout")
    tag_release(checkout, "1.0")
    subprocess.run(
        ["git", "-C", str(checkout), "remote", "add", "origin", str(checkout)], check=True
    )
    config = "[watcher]\nenabled = false\n"
    (tmp_path / "d" / "config" / "insiders").mkdir(parents=True)
    (tmp_path / "d" / "config" / "insiders" / "config.toml").write_text(config)
    daemon = Daemon(tmp_path / "d", ["--upstream", wheelhouse.index], cwd=checkout).start()
    try:
        refused = ctl(daemon, "repos", "add", "--", f"{evil}:x:evil", check=False)
        assert refused.returncode == 1
        assert "does not start with '-'" in refused.stderr
        ctl(daemon, "repos", "add", "https://example.invalid/o/r.git:evil")
    finally:
        daemon.stop()
    registry = daemon.data_dir / "repos.json"
    stored = json.loads(registry.read_text())
    stored["repos"][0]["source"]["location"] = evil
    registry.write_text(json.dumps(stored))
    daemon.start()
    try:
        result = ctl(daemon, "update", "--wait", "--json", "evil", check=False)
        assert result.returncode == 1
        outcome = json.loads(result.stdout.splitlines()[-1])["results"][0]
        assert outcome["outcome"] == "failed"
        assert "git ls-remote failed" in outcome["error"]
        assert not planted.exists()
    finally:
        daemon.stop()
