"""The unit files as systemd 257 (Debian trixie) reads them: verify and the security rating."""

from __future__ import annotations

import re

import pytest

from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.systemd

SYSTEM_UNITS = ["insiders.service", "insiders.socket", "insiders-control.socket"]
USER_UNITS = SYSTEM_UNITS


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_system_unit_verifies_clean(container: Container, unit: str) -> None:
    result = container.run(
        ["systemd-analyze", "verify", f"/usr/lib/systemd/system/{unit}"], check=False
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_user_units_verify_clean(container: Container) -> None:
    container.sh("id verifier >/dev/null 2>&1 || useradd -m verifier")
    uid = container.uid("verifier")
    container.run(["mkdir", "-p", "-m", "0700", f"/run/user/{uid}"])
    container.run(["chown", "verifier:verifier", f"/run/user/{uid}"])
    for unit in USER_UNITS:
        result = container.run(
            ["systemd-analyze", "verify", "--user", f"/usr/lib/systemd/user/{unit}"],
            user="verifier",
            check=False,
        )
        assert (unit, result.returncode, result.stderr) == (unit, 0, "")


def test_system_service_is_rated_ok(container: Container) -> None:
    """1.1 before builds ran in bubblewrap; its user, mount, PID and IPC namespaces, the mount
    calls and capset (1.0 in all) are worth what they buy: a build that sees nothing of the
    daemon's."""
    result = container.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            "--threshold=21",
            "/usr/lib/systemd/system/insiders.service",
        ],
        check=False,
    )
    match = re.search(
        r"Overall exposure level for insiders.service: (\d+\.\d+) (\w+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= 2.1
    assert match.group(2) == "OK"
    assert result.returncode == 0, result.stdout
