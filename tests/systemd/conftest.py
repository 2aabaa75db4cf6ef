"""One booted Debian container for every test under tests/systemd/, with insiders installed inside.

It is built on the first use (debootstrap, cached under /var/tmp), booted ephemeral, and powered off
at the end of the session whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, build_insiders_wheel
from tests.systemd.nspawn_harness import (
    PIP_CACHE,
    Container,
    booted,
    ensure_tree,
    require_root_and_host_tools,
)

VENV = "/opt/insiders"
PIP_CACHE_INSIDE = "/var/cache/insiders-test-pip"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def install(container: Container, wheel: Path) -> None:
    """Install insiders the way its Debian package will lay it out (until issue 6 brings the .deb):
    the units in /usr/lib/systemd, the sysusers entry, /usr/bin/insidersd and insidersctl."""
    if HOST_CA_BUNDLE.exists():
        # The container shares the host's network, so it must trust what the host trusts (a TLS
        # proxy's own CA, where there is one) to reach the package index.
        shutil.copyfile(HOST_CA_BUNDLE, container.path("/etc/ssl/certs/ca-certificates.crt"))
    for scope in ("system", "user"):
        target = container.path(f"/usr/lib/systemd/{scope}")
        for unit in sorted((ROOT / "units" / scope).iterdir()):
            if unit.suffix in (".service", ".socket"):
                shutil.copyfile(unit, target / unit.name)
    shutil.copyfile(
        ROOT / "units/system/insiders.sysusers", container.path("/usr/lib/sysusers.d/insiders.conf")
    )
    index_env = {k: v for k, v in os.environ.items() if k == "PIP_INDEX_URL"}
    container.run(["python3", "-m", "venv", VENV])
    container.run(
        [
            f"{VENV}/bin/pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--cache-dir",
            PIP_CACHE_INSIDE,
            f"/mnt/host/{wheel.name}",
        ],
        env=index_env,
        timeout=600,
    )
    container.sh(
        f"ln -sf {VENV}/bin/insidersd /usr/bin/insidersd\n"
        f"ln -sf {VENV}/bin/insidersctl /usr/bin/insidersctl\n"
        "systemd-sysusers\n"
        "systemctl daemon-reload\n"
    )


@contextlib.contextmanager
def _booted_with_insiders(
    tmp_path_factory: pytest.TempPathFactory, suite: str
) -> Iterator[Container]:
    started = time.monotonic()
    require_root_and_host_tools("the tests under a real systemd")
    work = tmp_path_factory.mktemp(f"systemd-{suite}")
    tree = ensure_tree(work / "debootstrap.log", suite)
    stage = work / "stage"
    stage.mkdir()
    if prebuilt := os.environ.get("INSIDERS_TEST_WHEEL"):  # test a wheel built elsewhere
        wheel = Path(shutil.copy(prebuilt, stage))
    else:
        wheel = build_insiders_wheel(stage)
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    binds = [(stage, "/mnt/host", True), (PIP_CACHE, PIP_CACHE_INSIDE, False)]
    with booted(tree, work / "nspawn.log", binds, suite) as running:
        install(running, wheel)
        print(f"\n{suite} container ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield running


@pytest.fixture(scope="session")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """trixie: systemd 257, what the Debian package targets."""
    with _booted_with_insiders(tmp_path_factory, "trixie") as running:
        yield running


@pytest.fixture(scope="session")
def bookworm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """bookworm: systemd 252 (as RHEL 9; Ubuntu 22.04 has 249), what the user unit must run on."""
    with _booted_with_insiders(tmp_path_factory, "bookworm") as running:
        yield running
