"""`insidersctl server enable --user` under a real systemd, as a pip user does it: insiders
installed into a venv of their own (not on PATH, no Debian package for them), then the venv's
insidersctl writes the units, and the user's manager runs that venv's insidersd.

Under systemd 257 (trixie) and 252 (bookworm). The container also holds the Debian-like install
of conftest.py (/usr/lib/systemd/user/insiders.service running /usr/bin/insidersd): the user's own
unit in ~/.config/systemd/user takes its place, as systemd's search path says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support import free_port
from tests.systemd.conftest import PIP_CACHE_INSIDE
from tests.systemd.helpers import get
from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.systemd

USER = "bob"
HOME = f"/home/{USER}"
VENV = f"{HOME}/venv"
UNITS = f"{HOME}/.config/systemd/user"


class Bob:
    def __init__(self, container: Container, port: int) -> None:
        self.c = container
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def run(self, *command: str, check: bool = True) -> str:
        return self.c.run(list(command), user=USER, check=check).stdout

    def ctl(self, *args: str) -> tuple[int, str, str]:
        """The venv's insidersctl, by its path: PATH does not have the venv's bin."""
        result = self.c.run([f"{VENV}/bin/insidersctl", *args], user=USER, check=False)
        return result.returncode, result.stdout, result.stderr

    def active(self) -> str:
        return self.run("systemctl", "--user", "is-active", "insiders", check=False).strip()

    def journal(self) -> str:
        """This user's daemon's journal (another user's daemon logs under the same unit name)."""
        uid = f"_UID={self.c.uid(USER)}"
        return self.c.run(
            ["journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_USER_UNIT=insiders.service", uid],
            check=False,
        ).stdout

    def write_config(self, extra: str = "") -> None:
        config = f'[server]\nport = {self.port}\n\n[upstream]\nmode = "none"\n{extra}'
        self.c.path(f"{HOME}/.config/insiders/config.toml").write_text(config)


@pytest.fixture(scope="module", params=["trixie", "bookworm"])
def bob(request: pytest.FixtureRequest) -> Iterator[Bob]:
    container: Container = request.getfixturevalue(
        "container" if request.param == "trixie" else "bookworm"
    )
    container.sh(f"id {USER} >/dev/null 2>&1 || useradd -m {USER}")
    uid = container.uid(USER)
    container.run(["loginctl", "enable-linger", USER])
    container.wait_for(f"user@{uid}.service", "ActiveState", "active", timeout=60)
    me = Bob(container, free_port())
    started = time.monotonic()
    me.run("python3", "-m", "venv", VENV)
    # pip install into the user's venv (by root, for the test run's shared download cache).
    container.sh(
        f"{VENV}/bin/pip install --quiet --disable-pip-version-check --cache-dir "
        f"{PIP_CACHE_INSIDE} /mnt/host/insiders-*.whl && chown -R {USER}: {VENV}",
        timeout=600,
    )
    print(f"\npip install into {VENV}: {time.monotonic() - started:.1f}s")
    me.run("mkdir", "-p", f"{HOME}/.config/insiders")
    me.write_config()
    yield me
    me.ctl("server", "disable", "--user")


def test_enable_writes_the_units_and_starts_the_venvs_insidersd(bob: Bob) -> None:
    started = time.monotonic()
    status, out, err = bob.ctl("server", "enable", "--user")
    took = time.monotonic() - started
    assert status == 0, out + err + bob.journal()
    print(f"\ninsidersctl server enable --user -> active: {took:.2f}s")
    assert out.splitlines()[:5] == [
        f"wrote {UNITS}/insiders-control.socket",
        f"wrote {UNITS}/insiders.service",
        f"wrote {UNITS}/insiders.socket",
        "ran `systemctl --user daemon-reload`",
        "ran `systemctl --user enable --now insiders.service`",
    ]
    assert bob.active() == "active"
    assert bob.run("systemctl", "--user", "is-enabled", "insiders").strip() == "enabled"
    shown = bob.c.show("insiders", "FragmentPath", "ExecStart", "Type", "NRestarts", user=USER)
    assert shown["FragmentPath"] == f"{UNITS}/insiders.service"
    assert f"path={VENV}/bin/insidersd " in shown["ExecStart"]
    assert (shown["Type"], shown["NRestarts"]) == ("notify", "0")
    assert get(f"{bob.url}/simple/").status_code == 200
    # The unit as this systemd reads it: no unknown key, the binary there.
    verify = bob.c.run(
        ["systemd-analyze", "verify", "--user", f"{UNITS}/insiders.service"], user=USER, check=False
    )
    assert (verify.returncode, verify.stderr) == (0, "")


def test_the_venvs_insidersctl_reaches_it(bob: Bob) -> None:
    status, out, err = bob.ctl("status")
    assert status == 0, out + err
    assert out.startswith("insidersd ")
    assert f"{bob.url}/simple/" in out
    report = json.loads(bob.ctl("status", "--json")[1])
    main_pid = bob.c.show("insiders", "MainPID", user=USER)["MainPID"]
    assert str(report["pid"]) == main_pid


def test_a_reload_goes_through_the_unit(bob: Bob) -> None:
    """systemctl reload runs the unit's ExecReload=, the venv's insidersctl reload."""
    bob.write_config("\n[watcher]\ninterval = 4321.0\n")
    bob.run("systemctl", "--user", "reload", "insiders")
    watcher = json.loads(bob.ctl("watcher", "status", "--json")[1])["watcher"]
    assert watcher["interval"] == 4321.0
    assert "configuration reloaded" in bob.journal()
    bob.write_config()
    bob.run("systemctl", "--user", "reload", "insiders")


def test_enable_again_changes_nothing(bob: Bob) -> None:
    pid = bob.c.show("insiders", "MainPID", user=USER)["MainPID"]
    status, out, err = bob.ctl("server", "enable", "--user")
    assert status == 0, out + err
    assert out.splitlines()[:4] == [
        f"unchanged {UNITS}/insiders-control.socket",
        f"unchanged {UNITS}/insiders.service",
        f"unchanged {UNITS}/insiders.socket",
        "ran `systemctl --user enable --now insiders.service`",
    ]
    assert bob.c.show("insiders", "MainPID", user=USER)["MainPID"] == pid  # not restarted


def test_disable_stops_it_and_removes_the_units(bob: Bob) -> None:
    status, out, err = bob.ctl("server", "disable", "--user")
    assert status == 0, out + err
    assert out.splitlines() == [
        "ran `systemctl --user disable --now insiders-control.socket insiders.service "
        "insiders.socket`",
        f"removed {UNITS}/insiders-control.socket",
        f"removed {UNITS}/insiders.service",
        f"removed {UNITS}/insiders.socket",
        "ran `systemctl --user daemon-reload`",
    ]
    assert bob.active() == "inactive"
    assert "SIGTERM: stopping" in bob.journal()
    # What is left is the unit of the package-like install (/usr/bin/insidersd): the hint of a
    # stopped daemon names it, since it is installed.
    fragment = bob.c.show("insiders", "FragmentPath", user=USER)["FragmentPath"]
    assert fragment == "/usr/lib/systemd/user/insiders.service"
    status, out, err = bob.ctl("status")
    assert status == 3
    assert err.endswith("start it with `systemctl --user start insiders`\n"), err


# -- the system form: root, a venv outside /home ---------------------------------------------

SYSTEM_VENV = "/opt/insiders"  # conftest.py's pip install (a venv, like any pip user's)
SYSTEM_UNITS = "/etc/systemd/system"


def test_the_system_form_is_for_root(bob: Bob) -> None:
    status, _, err = bob.ctl("server", "enable")
    assert status == 2
    assert err == (
        "insidersctl server: the system units go to /etc/systemd/system: run it as root "
        f"(`sudo {VENV}/bin/insidersctl server enable`), or add --user for your own daemon\n"
    )


def test_the_system_form_runs_the_venvs_insidersd_as_the_system_service(bob: Bob) -> None:
    c = bob.c
    if c.suite == "bookworm":
        # systemd 252 would run the Type=notify-reload unit as Type=simple: refused, nothing
        # written.
        refused = c.run([f"{SYSTEM_VENV}/bin/insidersctl", "server", "enable"], check=False)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            "insidersctl: the system unit is Type=notify-reload, which systemd knows from 253 "
            "on; this is systemd 252: use --user (its unit runs on 249 and later)\n"
        )
        assert not c.path(f"{SYSTEM_UNITS}/insiders.service").exists()
        return
    port = free_port()
    c.run(["mkdir", "-p", "/etc/insiders"])
    c.path("/etc/insiders/config.toml").write_text(
        f'[server]\nport = {port}\n\n[upstream]\nmode = "none"\n'
    )
    ctl = f"{SYSTEM_VENV}/bin/insidersctl"
    try:
        result = c.run([ctl, "server", "enable"], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            f"wrote {SYSTEM_UNITS}/insiders-control.socket",
            f"wrote {SYSTEM_UNITS}/insiders.service",
            f"wrote {SYSTEM_UNITS}/insiders.socket",
            "ran `systemctl daemon-reload`",
            "ran `systemctl enable --now insiders.service`",
        ]
        shown = c.show("insiders", "FragmentPath", "ExecStart", "ActiveState", "User")
        assert shown["FragmentPath"] == f"{SYSTEM_UNITS}/insiders.service"
        assert f"path={SYSTEM_VENV}/bin/insidersd " in shown["ExecStart"]
        assert (shown["ActiveState"], shown["User"]) == ("active", "insiders")
        assert get(f"http://127.0.0.1:{port}/simple/").status_code == 200
        status = c.run([ctl, "status"], check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        c.run(["systemctl", "reload", "insiders"])  # notify-reload: SIGHUP, then READY=1
        assert c.show("insiders", "ActiveState")["ActiveState"] == "active"
    finally:
        result = c.run([ctl, "server", "disable"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert c.show("insiders", "ActiveState")["ActiveState"] == "inactive"
    assert c.show("insiders", "FragmentPath")["FragmentPath"] == (
        "/usr/lib/systemd/system/insiders.service"
    )
