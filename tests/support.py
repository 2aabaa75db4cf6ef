"""Test helpers: real packages built with `python -m build`, real insidersd processes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import queue
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.projects import broken_pyproject, module_name, write_hatchling_project

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent  # the checkout
INSIDERSD = BIN / "insidersd"
INSIDERSCTL = BIN / "insidersctl"


_CLIENT_SETUP = ("PIP_", "UV_", "TWINE_", "POETRY_", "PDM_", "HATCH_", "FLIT_")
_MACHINE_ONLY = {
    *("JOURNAL_STREAM", "INVOCATION_ID", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
}


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment that cannot see this machine's setup of the clients (their settings and the
    CA bundles they would trust), of XDG or of systemd."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((*_CLIENT_SETUP, "XDG_", "NOTIFY_", "LISTEN_", "WATCHDOG_"))
        and k not in _MACHINE_ONLY
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def write_project(
    where: Path,
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    dependencies: tuple[str, ...] = (),
) -> Path:
    """A small real project (hatchling, core metadata 2.3 so that twine 6.1 accepts it)."""
    requires = f'requires-python = "{requires_python}"\n' if requires_python else ""
    deps = ", ".join(f'"{d}"' for d in dependencies)
    return write_hatchling_project(
        where / f"{module_name(name)}-{version}",
        name,
        version,
        project=f"dependencies = [{deps}]\n{requires}",
        tail=(
            '[tool.hatch.build.targets.wheel]\ncore-metadata-version = "2.3"\n'
            '[tool.hatch.build.targets.sdist]\ncore-metadata-version = "2.3"\n'
        ),
    )


def build(project: Path, out: Path) -> list[Path]:
    """`python -m build` without isolation: the build backend comes from the test venv."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
        check=True,
        capture_output=True,
    )
    stem = project.name.split("-")[0]
    return sorted(p for p in out.iterdir() if p.name.startswith(stem))


def build_insiders_wheel(out: Path) -> Path:
    """insiders' own wheel, built from this checkout into `out`."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("insiders-*.whl")
    return wheel


def make_wheel(
    name: str,
    version: str,
    payload: bytes = b"",
    *,
    meta_name: str | None = None,
    requires: tuple[str, ...] = (),
) -> bytes:
    """A valid wheel written directly: for tests that need many or odd ones fast."""
    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    buffer = io.BytesIO()
    depends = "".join(f"Requires-Dist: {r}\n" for r in requires)
    metadata = f"Metadata-Version: 2.1\nName: {meta_name or name}\nVersion: {version}\n{depends}\n"
    wheel = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {
        f"{dist}.dist-info/METADATA": metadata.encode(),
        f"{dist}.dist-info/WHEEL": wheel.encode(),
        f"{re.sub(r'[-_.]+', '_', name)}/data.bin": payload,
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


def wheel_filename(name: str, version: str) -> str:
    """The filename the binary distribution format asks for: normalised name, lower case."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-py3-none-any.whl"


class NotifyReceiver:
    """The service manager's end of NOTIFY_SOCKET for one insidersd process, as systemd keeps it.

    A thread reads every datagram as it comes (the kernel queues only a few: an unread socket would
    block the daemon's next notification) into `messages`, and `settled` is set at READY=1 or when
    the process ends, whichever comes first; the process's end is seen through a pidfd, so nothing
    here polls.
    """

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: queue.Queue[str] = queue.Queue()
        self.ready: str | None = None  # the READY=1 datagram, with its STATUS=
        self.settled = threading.Event()

    def watch(self, pid: int) -> None:
        """Read until process `pid` has ended (it must not be reaped yet)."""
        pidfd = os.pidfd_open(pid)
        thread = threading.Thread(target=self._read, args=(pidfd,), daemon=True)
        thread.start()

    def _read(self, pidfd: int) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.sock, selectors.EVENT_READ)
                selector.register(pidfd, selectors.EVENT_READ)
                ended = False
                while not ended:
                    ready = {key.fd for key, _ in selector.select()}
                    ended = pidfd in ready
                    if self.sock.fileno() in ready or ended:
                        self._drain()
        finally:
            os.close(pidfd)
            self.sock.close()
            self.settled.set()

    def _drain(self) -> None:
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except BlockingIOError:
                return
            self.messages.put(message)
            if self.ready is None and message.startswith("READY=1"):
                self.ready = message
                self.settled.set()

    def next(self, timeout: float = 10) -> str:
        """The next datagram the daemon sent (after those already taken)."""
        return self.messages.get(timeout=timeout)


@dataclass
class Daemon:
    """A real insidersd process on a free port with its own directories.

    It is started with a NOTIFY_SOCKET of its own, and is ready when it says READY=1 there, as
    systemd sees it (`notify` holds the datagrams it sent).
    """

    home: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    # A lowered file-descriptor limit (soft and hard) for the daemon, for the fault tests.
    nofile: int | None = None
    log_path: Path = field(init=False)
    notify: NotifyReceiver | None = None

    def __post_init__(self) -> None:
        self.log_path = self.home / "insidersd.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data" / "insiders"

    @property
    def token(self) -> str:
        return (self.data_dir / "upload-token").read_text().strip()

    @property
    def index(self) -> str:
        return f"{self.url}/simple/"

    def start(self, *, wait: bool = True, port: int | None = 0) -> Daemon:
        """`port` None: no --port flag, the config file's port is used."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.notify = NotifyReceiver(self.home / "notify.sock")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(INSIDERSD), *(["--port", str(port)] if port is not None else []), *self.args],
                env=isolated_env(self.home, **{**self.env, "NOTIFY_SOCKET": str(self.notify.path)}),
                cwd=self.cwd,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=None if self.nofile is None else self._limit_descriptors,
            )
        self.notify.watch(self.proc.pid)
        if wait:
            self.url = self._wait_until_ready()
        return self

    def _limit_descriptors(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _wait_until_ready(self, timeout: float = 20) -> str:
        """READY=1 on the notify socket; the first URL its STATUS= line names."""
        assert self.notify is not None
        assert self.proc is not None
        if not self.notify.settled.wait(timeout):
            raise AssertionError(f"insidersd did not start:\n{self.log()}")
        if self.notify.ready is None:
            raise AssertionError(f"insidersd exited {self.proc.wait()}:\n{self.log()}")
        match = re.search(r"^STATUS=serving .*? on (https?://[^\s;]+)", self.notify.ready, re.M)
        assert match, self.notify.ready
        return match.group(1).rstrip("/")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, count: int = 1) -> None:
        """Until the log says `text` `count` times (30 s at most)."""
        deadline = time.monotonic() + 30
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def upload_wheel(self, where: Path, name: str, version: str, payload: bytes = b"") -> Path:
        """A wheel (make_wheel) uploaded, which must succeed; its file is kept under `where`, and
        one already there is sent again as it is (a second store gets the very same bytes)."""
        path = where / wheel_filename(name, version)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_wheel(name, version, payload))
        answer = self.upload(path)
        assert answer.status_code == 200, answer.text
        return path

    def upload(self, path: Path, *, token: str | None = None, **fields: str) -> httpx.Response:
        """A legacy-API upload as twine sends it (for the refusal tests' precise control)."""
        data = path.read_bytes()
        name, version = fields.pop("name", None), fields.pop("version", None)
        if name is None or version is None:
            parts = path.name.split("-")
            name, version = name or parts[0], version or parts[1].removesuffix(".tar.gz")
        form = {
            ":action": "file_upload",
            "protocol_version": "1",
            "name": name,
            "version": version,
            "filetype": "bdist_wheel" if path.suffix == ".whl" else "sdist",
            "sha256_digest": hashlib.sha256(data).hexdigest(),
            **fields,
        }
        with self.client() as client:
            return client.post(
                "/legacy/",
                data=form,
                files={"content": (path.name, data, "application/octet-stream")},
                auth=("__token__", token if token is not None else self.token),
            )


@contextlib.contextmanager
def following_log(daemon: Daemon) -> Iterator[queue.Queue[str]]:
    """`insidersctl logs -f -n 0` on `daemon`'s log, entered once it follows: every line the
    daemon logs from then on reaches the queue. Ends it with ^C (status 130)."""
    follower = subprocess.Popen(
        [str(INSIDERSCTL), "logs", "-f", "-n", "0"],
        env=isolated_env(daemon.home),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout])  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until_read_to_the_end(follower, daemon.data_dir / "insidersd.log")
        yield lines
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 130
        reader.join(10)
        follower.stdout.close()


def run_ctl(
    daemon: Daemon,
    *args: str,
    timeout: float = 300,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Real insidersctl against `daemon` (its home's environment unless `env`), output captured.
    With `check`, anything but exit status 0 fails the test with both streams."""
    result = subprocess.run(
        [str(INSIDERSCTL), *args],
        env=env if env is not None else isolated_env(daemon.home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"insidersctl {args}: {result.stdout}\n{result.stderr}"
    return result


def run_python(home: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` from the test venv in `home`'s isolated environment; it must succeed."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=isolated_env(home),
        capture_output=True,
        text=True,
        check=True,
    )


def pip_download(
    index: str, dest: Path, *args: str, home: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Real `pip download` from `index` alone into `dest`; the caller checks the outcome."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--isolated",
            "--no-cache-dir",
            "--index-url",
            index,
            "--dest",
            str(dest),
            *args,
        ],
        env=isolated_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (it may be taken again: use it at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(home: Path, text: str) -> Path:
    """`text` as the config file insidersd reads by default under `home` (XDG_CONFIG_HOME)."""
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return config


def wait_until_read_to_the_end(process: subprocess.Popen[str], path: Path) -> None:
    """Until `process` holds `path` open at a position past 0: it has gone to the end of the (not
    empty) log, so a line appended from now on is after its position. A follower started with
    `-n 0` prints nothing to say so; /proc/PID/fdinfo shows it."""
    target = os.path.realpath(path)
    fds = Path(f"/proc/{process.pid}/fd")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the follower exited {process.returncode}"
        for fd in fds.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(fd) == target and _position(process.pid, fd.name) > 0:
                    return
        time.sleep(0.02)
    raise AssertionError(f"{process.args} did not open {path} and go to its end")


def _position(pid: int, fd: str) -> int:
    info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return int(re.search(r"^pos:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]


def wait_for_line(lines: queue.Queue[str], text: str, timeout: float = 20) -> list[str]:
    """The lines up to the first that contains `text` (the last of them)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or text not in seen[-1]:
        try:
            seen.append(lines.get(timeout=max(0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"no line with {text!r}, only {seen}") from None
    return seen


WHEELHOUSE = ROOT / ".cache" / "wheelhouse"


def serve_wheelhouse(daemon: Daemon) -> None:
    """Upload the build backends (downloaded by `make`) to `daemon`, a local upstream for builds."""
    wheels = sorted(WHEELHOUSE.glob("*.whl"))
    assert wheels, f"no wheels in {WHEELHOUSE}: run `make .cache/wheelhouse/.complete`"
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        response = daemon.upload(wheel, name=name, version=version)
        assert response.status_code == 200, response.text


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def git_project(where: Path, name: str, *, scm: bool = False, pyproject: str | None = None) -> Path:
    """A git repository with a small project: a static version, or one from the tag (hatch-vcs)."""
    module = re.sub(r"[-_.]+", "_", name).lower()
    repo = where / name
    (repo / "src" / module).mkdir(parents=True)
    git(repo, "init", "--quiet", "--initial-branch", "main")
    if pyproject is None:
        requires = '["hatchling", "hatch-vcs"]' if scm else '["hatchling"]'
        version = 'dynamic = ["version"]' if scm else 'version = "0.0.0"'
        pyproject = textwrap.dedent(
            f"""\
            [build-system]
            requires = {requires}
            build-backend = "hatchling.build"

            [project]
            name = "{name}"
            {version}
            """
        )
        if scm:
            pyproject += '[tool.hatch.version]\nsource = "vcs"\n'
    (repo / "pyproject.toml").write_text(pyproject)
    return repo


def tag_release(repo: Path, version: str, tag: str | None = None) -> None:
    """Set the static version (when there is one), commit, and tag."""
    pyproject = repo / "pyproject.toml"
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
    pyproject.write_text(text)
    module = next((repo / "src").iterdir())
    (module / "__init__.py").write_text(f'VERSION = "{version}"\n')
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", f"release {version}")
    git(repo, "tag", tag or f"v{version}")


def tag_releases(repo: Path, *versions: str, broken: str | None = None) -> None:
    """Tag each of `versions` in order (tag_release); the one named `broken` with a pyproject.toml
    whose build fails (projects.broken_pyproject), the others with the project as it was."""
    pyproject = repo / "pyproject.toml"
    good = pyproject.read_text()
    for version in versions:
        if version == broken:
            pyproject.write_text(broken_pyproject(repo.name))
        tag_release(repo, version)
        if version == broken:
            pyproject.write_text(good)


def pip_install(
    index: str, target: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Real pip, from `index` alone (none of this machine's pip setup), into `target`; unless
    `check` is false (the caller judges a refusal), it must succeed."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-cache-dir",
            "--index-url",
            index,
            "--target",
            str(target),
            *args,
        ],
        env=isolated_env(target.parent),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, f"pip install {args}:\n{result.stdout}\n{result.stderr}"
    return result


def installed_version(target: Path, module: str) -> str:
    """The VERSION the test projects put in their module (see write_project, tag_release)."""
    namespace: dict[str, str] = {}
    exec((target / module / "__init__.py").read_text(), namespace)
    return namespace["VERSION"]


class GoSignal:
    """A signal that a sandboxed build can wait for (it sees none of the test's files, but shares
    the network): a loopback port that accepts connections once `give` was called."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None

    def code(self) -> str:
        """Python source defining `go_given()` (one try) and `wait_for_go()`, for a backend."""
        return textwrap.dedent(
            f"""\
            import socket as _socket, time as _time

            def go_given():
                try:
                    _socket.create_connection(("127.0.0.1", {self.port}), timeout=2).close()
                    return True
                except OSError:
                    return False

            def wait_for_go():
                while not go_given():
                    _time.sleep(0.2)
            """
        )

    def give(self) -> None:
        if self._listener is None:
            # Connections complete in the kernel's backlog: nothing needs to accept them.
            self._listener = socket.create_server(("127.0.0.1", self.port), backlog=128)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
