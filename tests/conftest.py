from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mirrors import Launch, launching
from tests.support import Daemon, build, write_project


def pytest_configure(config: pytest.Config) -> None:
    """^C reaches the processes the tests start, however the suite was started: a shell without
    job control starts `make test &` with SIGINT ignored, which every child would inherit (a
    Python child then never sees its KeyboardInterrupt, and `insidersctl logs -f` follows on).
    A handler, unlike SIG_IGN, is reset to the default by exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Real distributions built once per session with `python -m build`."""
    src = tmp_path_factory.mktemp("projects")
    out = tmp_path_factory.mktemp("dists")
    built: dict[str, list[Path]] = {}
    for key, name, version, requires in [
        ("demo-1.0", "Demo_Pkg", "1.0.0", ">=3.8,<4"),
        ("demo-1.1", "Demo_Pkg", "1.1.0", ">=3.8,<4"),
        ("other-0.1", "other-pkg", "0.1", None),
    ]:
        project = write_project(src, name, version, requires_python=requires)
        built[key] = build(project, out / key)
    # Same name and version, other bytes: what "File already exists" is about.
    changed = write_project(src / "changed", "Demo_Pkg", "1.0.0", requires_python=">=3.8,<4")
    (changed / "src" / "demo_pkg" / "extra.py").write_text("CHANGED = True\n")
    built["demo-1.0-changed"] = build(changed, out / "demo-1.0-changed")
    return built


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "daemon", ["--upstream-mode", "none"]).start()
    yield running
    if running.proc and running.proc.poll() is None:
        running.stop()


@pytest.fixture
def launch() -> Iterator[Launch]:
    """Start an insidersd (Daemon(home, args).start(wait=...)); every one still running at the
    end of the test is stopped, whatever the test's outcome."""
    yield from launching()


# Debian 12's pip. PEP 714 changed the JSON key for core metadata; pip 22.3 to 23.1 crash on the
# old key's dict value, so the pages are checked against this one as well as the current pip.
OLD_PIP = "23.0.1"


@pytest.fixture(scope="session")
def old_pip() -> Path:
    """A venv of the project's cache holding pip 23.0.1 (made once, reused by later runs)."""
    venv = Path(__file__).resolve().parent.parent / ".cache" / f"pip-{OLD_PIP}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--isolated", f"pip=={OLD_PIP}"],
            check=True,
        )
        done.touch()
    return python
