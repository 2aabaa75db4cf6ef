"""The index as pip, uv and twine see it: real clients against a real insidersd."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import BIN, Daemon, installed_version, isolated_env, pip_download, pip_install


def run(cmd: list[str], home: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, env=isolated_env(home), capture_output=True, text=True, timeout=180, **kwargs
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def twine(daemon: Daemon, *args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [
            str(BIN / "twine"),
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            f"{daemon.url}/legacy/",
            "-u",
            "__token__",
            "-p",
            daemon.token,
            *map(str, args),
        ],
        home,
    )


def pip(daemon: Daemon, target: Path, *args: str) -> str:
    return pip_install(daemon.index, target, *args).stdout


def uv_pip_install(daemon: Daemon, target: Path, *args: str) -> None:
    """Real `uv pip install`, from the index alone, into `target`."""
    command = [
        str(BIN / "uv"), "pip", "install", "--no-config", "--no-cache", "--index-url", daemon.index,
        "--target", str(target), "--python", sys.executable, *args,
    ]  # fmt: skip
    run(command, target.parent)


def test_twine_upload_then_pip_and_uv_install(
    daemon: Daemon, dists: dict[str, list[Path]], tmp_path: Path
) -> None:
    twine(daemon, *dists["demo-1.0"], home=tmp_path)
    # The identical files again: accepted, as the public index does.
    twine(daemon, *dists["demo-1.0"], home=tmp_path)
    # Other bytes under a published name: refused, and twine says why (the reason phrase).
    with pytest.raises(AssertionError, match=r"409 Conflict from .*\n\s*File already exists"):
        twine(daemon, *dists["demo-1.0-changed"], home=tmp_path)
    # twine 7 (like 6.2) refuses --skip-existing before sending anything, for every index but
    # the public one: what the README says.
    with pytest.raises(
        AssertionError, match=r"does not have support for the\s+following features: --skip-existing"
    ):
        twine(daemon, "--skip-existing", *dists["demo-1.0-changed"], home=tmp_path)

    pip(daemon, tmp_path / "pip", "demo-pkg")
    assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"

    uv_pip_install(daemon, tmp_path / "uv", "demo-pkg")
    assert installed_version(tmp_path / "uv", "demo_pkg") == "1.0.0"

    # A newer version: `pip install -U` finds it.
    twine(daemon, *dists["demo-1.1"], home=tmp_path)
    pip(daemon, tmp_path / "pip", "--upgrade", "demo-pkg")
    assert installed_version(tmp_path / "pip", "demo_pkg") == "1.1.0"


def test_uv_publish(daemon: Daemon, dists: dict[str, list[Path]], tmp_path: Path) -> None:
    publish = [
        str(BIN / "uv"), "publish", "--no-config", "--publish-url", f"{daemon.url}/legacy/",
        "--username", "__token__", "--password", daemon.token, *map(str, dists["other-0.1"]),
    ]  # fmt: skip
    run(publish, tmp_path)
    pip(daemon, tmp_path / "t", "other-pkg==0.1")
    assert installed_version(tmp_path / "t", "other_pkg") == "0.1"
    # Publishing the identical files again succeeds: same content is accepted idempotently.
    run(publish, tmp_path)


def test_pip_download_with_required_hashes(
    daemon: Daemon, dists: dict[str, list[Path]], tmp_path: Path
) -> None:
    twine(daemon, *dists["demo-1.0"], home=tmp_path)
    wheel = next(p for p in dists["demo-1.0"] if p.suffix == ".whl")
    sdist = next(p for p in dists["demo-1.0"] if p.suffix != ".whl")
    digests = " ".join(
        f"--hash=sha256:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in (wheel, sdist)
    )
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"demo-pkg==1.0.0 {digests}\n")
    downloaded = pip_download(
        daemon.index,
        tmp_path / "dl",
        "--require-hashes",
        "-r",
        str(requirements),
        home=tmp_path,
        timeout=180,
    )
    assert downloaded.returncode == 0, f"{downloaded.stdout}\n{downloaded.stderr}"
    assert (tmp_path / "dl" / wheel.name).read_bytes() == wheel.read_bytes()

    # A wrong hash must make pip refuse what the index serves.
    requirements.write_text(f"demo-pkg==1.0.0 --hash=sha256:{'0' * 64}\n")
    refused = pip_download(
        daemon.index, tmp_path / "dl2", "--require-hashes", "-r", str(requirements), home=tmp_path
    )
    assert refused.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_requires_python_excludes_versions(daemon: Daemon, tmp_path: Path, installer: str) -> None:
    from tests.support import build, write_project

    old = write_project(tmp_path / "src", "pyreq", "1.0", requires_python=">=3.8")
    new = write_project(tmp_path / "src", "pyreq", "2.0", requires_python=">=3.99")
    twine(daemon, *build(old, tmp_path / "d1"), *build(new, tmp_path / "d2"), home=tmp_path)
    target = tmp_path / "t"
    if installer == "pip":
        pip(daemon, target, "pyreq")
    else:
        uv_pip_install(daemon, target, "pyreq")
    assert installed_version(target, "pyreq") == "1.0"


def test_debian_12_pip_installs_a_wheel(
    daemon: Daemon, dists: dict[str, list[Path]], tmp_path: Path, old_pip: Path
) -> None:
    """pip 23.0.1 asks for the JSON pages and crashed on the pre-PEP 714 key of a wheel."""
    twine(daemon, *dists["demo-1.0"], home=tmp_path)
    version = run([str(old_pip), "-m", "pip", "--version"], tmp_path).stdout
    assert version.startswith("pip 23.0.1 ")
    install = [
        str(old_pip), "-m", "pip", "install", "--isolated", "--no-cache-dir", "--only-binary=:all:",
        "--index-url", daemon.index, "--target", str(tmp_path / "t"), "demo-pkg",
    ]  # fmt: skip
    output = run(install, tmp_path).stdout
    assert "demo_pkg-1.0.0-py3-none-any.whl" in output
    assert installed_version(tmp_path / "t", "demo_pkg") == "1.0.0"
