"""Test helpers: real packages built with `python -m build`, real insidersd processes."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
INSIDERSD = BIN / "insidersd"


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment that cannot see this machine's pip or XDG setup."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "XDG_", "NOTIFY_", "LISTEN_", "WATCHDOG_"))
        and k not in {"JOURNAL_STREAM", "INVOCATION_ID", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"}
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
    module = re.sub(r"[-_.]+", "_", name).lower()
    project = where / f"{module}-{version}"
    (project / "src" / module).mkdir(parents=True)
    (project / "src" / module / "__init__.py").write_text(f'VERSION = "{version}"\n')
    requires = f'requires-python = "{requires_python}"\n' if requires_python else ""
    deps = ", ".join(f'"{d}"' for d in dependencies)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{name}"
            version = "{version}"
            description = "A test package"
            dependencies = [{deps}]
            """
        )
        + requires
        + textwrap.dedent(
            """\
            [tool.hatch.build.targets.wheel]
            core-metadata-version = "2.3"
            [tool.hatch.build.targets.sdist]
            core-metadata-version = "2.3"
            """
        )
    )
    return project


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


def make_wheel(
    name: str, version: str, payload: bytes = b"", *, meta_name: str | None = None
) -> bytes:
    """A valid wheel written directly: for tests that need many or odd ones fast."""
    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    buffer = io.BytesIO()
    metadata = f"Metadata-Version: 2.1\nName: {meta_name or name}\nVersion: {version}\n\n"
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


@dataclass
class Daemon:
    """A real insidersd process on a free port with its own directories."""

    home: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    # A lowered file-descriptor limit (soft and hard) for the daemon, for the fault tests.
    nofile: int | None = None
    log_path: Path = field(init=False)

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

    def start(self, *, wait: bool = True, port: int = 0) -> Daemon:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        offset = log.tell()
        self.proc = subprocess.Popen(
            [str(INSIDERSD), "--port", str(port), *self.args],
            env=isolated_env(self.home, **self.env),
            cwd=self.cwd,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=None if self.nofile is None else self._limit_descriptors,
        )
        log.close()
        if wait:
            self.url = self._wait_for_url(offset)
        return self

    def _limit_descriptors(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _wait_for_url(self, offset: int, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match = re.search(r"serving on (https?://\S+?)[;\s]", text)
            if match:
                return match.group(1).rstrip("/")
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"insidersd exited {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise AssertionError(f"insidersd did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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


WHEELHOUSE = Path(__file__).parent.parent / ".cache" / "wheelhouse"


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


def pip_install(index: str, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Real pip, from `index` alone (none of this machine's pip setup), into `target`."""
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
    assert result.returncode == 0, f"pip install {args}:\n{result.stdout}\n{result.stderr}"
    return result


def installed_version(target: Path, module: str) -> str:
    """The VERSION the test projects put in their module (see write_project, tag_release)."""
    namespace: dict[str, str] = {}
    exec((target / module / "__init__.py").read_text(), namespace)
    return namespace["VERSION"]
