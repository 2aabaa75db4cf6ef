"""The Debian package built once per session in a trixie tree, and a booted trixie to install it.

Two packages are built from this source tree: the release (its version from debian/changelog),
checked with lintian, and a newer build of the same code to upgrade to. Both trees are cached under
/var/tmp (tests/deb/debbuild.py, tests/systemd/nspawn_harness.py); the container is ephemeral.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.deb.debbuild import Built, build, stage_source, version_of
from tests.systemd.nspawn_harness import Container, ensure_tree, require_root_and_host_tools

# What the upgrade installs: sorts after the release's version for dpkg, and is a PEP 440 local
# version of it for Python, so `insidersctl status` tells which code runs.
UPGRADE_SUFFIX = "+test1"
DEBS_INSIDE = "/srv/debs"


@dataclass(frozen=True)
class Debs:
    release: Built
    upgrade: Built
    release_version: str
    upgrade_version: str
    build_seconds: float


@pytest.fixture(scope="package")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    require_root_and_host_tools("the Debian package tests")
    work = tmp_path_factory.mktemp("deb")
    stage = work / "stage"
    release = stage_source(stage / "release")
    version = version_of(release)
    upgrade = stage_source(stage / "upgrade", version=version + UPGRADE_SUFFIX)
    started = time.monotonic()
    built_release, built_upgrade = build(
        stage, [release, upgrade], log=work / "build.log", lintian=[release]
    )
    took = time.monotonic() - started
    print(f"\ntwo .debs built in {took:.1f}s (log: {work / 'build.log'})", file=sys.stderr)
    return Debs(built_release, built_upgrade, version, version_of(upgrade), took)


@pytest.fixture(scope="package")
def trixie(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted trixie with fresh package lists and both .debs in /srv/debs; nothing installed.

    Package-scoped, so it is gone before tests/systemd/ boots its own container, and named apart
    from it all the same (nspawn keeps per-name state under /run/systemd/nspawn).
    """
    work = tmp_path_factory.mktemp("deb-container")
    tree = ensure_tree(work / "debootstrap.log")
    running = Container(tree, work / "nspawn.log")
    running.name = f"insiders-deb-{os.getpid()}"
    try:
        running.boot()
        target = running.path(DEBS_INSIDE)
        target.mkdir(parents=True)
        for built in (debs.release, debs.upgrade):
            shutil.copy2(built.deb, target)
        running.run(["apt-get", "update", "-q"], timeout=300)
        yield running
    finally:
        # The copy holds some 120 more packages than the tree: nspawn may need more than the
        # harness's default minute to delete it when the disk is busy, and a killed one leaves it.
        running.poweroff(timeout=300)
