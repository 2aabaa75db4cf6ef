"""The Debian package's whole life in a booted trixie: install, use, upgrade, remove, purge.

The tests run in file order on one container and build on each other, as an administrator would:
what is uploaded, created and edited before the upgrade must still be there after it, and what
the removal keeps must be gone after the purge.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.deb.conftest import DEBS_INSIDE, Debs
from tests.deb.debbuild import LINTIAN_FAIL_ON, ROOT
from tests.support import free_port
from tests.systemd.helpers import PROBE, journal, probe_wheel
from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.deb

UNIT = "insiders.service"
CONFIG = "/etc/insiders/config.toml"
STATE = "/var/lib/insiders"
MEMBER = "member"
OUTSIDER = "outsider"
PYTHON_DIST = "/usr/lib/python3/dist-packages"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# The config edit an administrator makes; it must survive the upgrade untouched.
EDIT = ("# interval = 600.0", "interval = 1234.0")


@dataclass
class Life:
    """What the steps hand on to the next ones."""

    c: Container
    debs: Debs
    port: int
    url: str
    token: str = ""
    uploads: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def life(trixie: Container, debs: Debs) -> Life:
    # The container shares the host's network, where 31411 may be taken (a developer's insidersd,
    # another test run): the service gets a free port from a drop-in, the packaged config and unit
    # stay as shipped.
    port = free_port()
    dropin = trixie.path(f"/etc/systemd/system/{UNIT}.d/test-port.conf")
    dropin.parent.mkdir(parents=True)
    dropin.write_text(f"[Service]\nExecStart=\nExecStart=/usr/bin/insidersd --port {port}\n")
    return Life(trixie, debs, port, f"http://127.0.0.1:{port}")


def apt_get(life: Life, *args: str) -> str:
    return life.c.run(["apt-get", "-y", "-q", *args], env=APT_ENV, timeout=600).stdout


def ctl(life: Life, *args: str, user: str = MEMBER) -> str:
    return life.c.run(["insidersctl", *args], user=user).stdout


def status(life: Life) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(ctl(life, "--json", "status"))
    return report


def wait_active(life: Life) -> None:
    life.c.wait_for(UNIT, "ActiveState", "active", timeout=60)


def installed(life: Life) -> dict[str, str]:
    out = life.c.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def twine_upload(life: Life, version: str) -> None:
    wheel = probe_wheel(life.c.path("/srv/upload"), version)
    life.c.run(
        [
            "twine", "upload", "--non-interactive", "--disable-progress-bar",
            "--repository-url", f"{life.url}/legacy/",
            "--username", "__token__", "--password", life.token,
            f"/srv/upload/{wheel.name}",
        ],
        user=MEMBER,
    )  # fmt: skip
    life.uploads.append(wheel.name)


def pip_install(life: Life) -> str:
    """pip in a fresh venv installs the probe through the index; the version it got."""
    venv = f"/home/{MEMBER}/venv-{time.monotonic_ns()}"
    life.c.run(["python3", "-m", "venv", venv], user=MEMBER)
    life.c.run(
        [
            f"{venv}/bin/pip", "install", "--no-cache-dir", "--disable-pip-version-check",
            "--index-url", f"{life.url}/simple/", PROBE,
        ],
        user=MEMBER,
    )  # fmt: skip
    module = PROBE.replace("-", "_")
    code = f"import {module}; print({module}.VERSION)"
    return life.c.run([f"{venv}/bin/python", "-c", code], user=MEMBER).stdout.strip()


# -- the package itself -------------------------------------------------------------------------


def test_lintian_is_clean(debs: Debs) -> None:
    assert debs.release.lintian is not None
    print(debs.release.lintian)
    assert debs.release.lintian_ok, f"lintian --fail-on {LINTIAN_FAIL_ON}:\n{debs.release.lintian}"
    assert debs.release.deb.name == f"insiders_{debs.release_version}_all.deb"


# -- 1. install ---------------------------------------------------------------------------------


def test_install_pulls_only_debian_packages(life: Life) -> None:
    before = installed(life)
    apt_get(life, "install", f"{DEBS_INSIDE}/{life.debs.release.deb.name}")
    after = installed(life)
    assert after["insiders"] == "ii "
    new = sorted(set(after) - set(before))
    assert "python3-trio" in new, new
    assert "python3-quart-trio" in new, new
    # Every package apt installed but ours can be downloaded from the archive: nothing local.
    listing = life.c.run(["apt", "list", "--installed"], check=False).stdout
    local = [line.split("/")[0] for line in listing.splitlines() if ",local]" in line]
    assert local == ["insiders"], local
    # Nothing came from pip: the code and its libraries are files of Debian packages.
    modules = ["insiders", "insidersctl", "trio", "quart_trio", "hypercorn", "httpx", "msgspec"]
    code = (
        "import sys, importlib\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)"
    )
    files = life.c.run(["python3", "-c", code, *modules]).stdout.split()
    assert all(f.startswith(f"{PYTHON_DIST}/") for f in files), files
    owners = life.c.run(["dpkg", "-S", *files]).stdout
    assert re.findall(r"^insiders: ", owners, re.MULTILINE) == ["insiders: "] * 2, owners
    assert not life.c.run(
        ["sh", "-c", "ls /usr/local/lib/python3*/dist-packages"], check=False
    ).stdout
    shipped = life.c.run(["dpkg", "-L", "insiders"]).stdout.split()
    for path in (
        "/usr/bin/insidersd",
        "/usr/bin/insidersctl",
        "/usr/lib/systemd/system/insiders.service",
        "/usr/lib/systemd/system/insiders.socket",
        "/usr/lib/systemd/system/insiders-control.socket",
        "/usr/lib/systemd/user/insiders.service",
        "/usr/lib/sysusers.d/insiders.conf",
        "/usr/share/man/man1/insidersd.1.gz",
        "/usr/share/man/man1/insidersctl.1.gz",
        "/usr/share/bash-completion/completions/insidersctl",
        "/usr/share/fish/vendor_completions.d/insidersctl.fish",
        CONFIG,
    ):
        assert path in shipped, path
    conffiles = life.c.run(["dpkg-query", "-W", "-f", "${Conffiles}", "insiders"]).stdout
    assert CONFIG in conffiles


def test_the_service_runs_hardened_as_its_own_user(life: Life) -> None:
    wait_active(life)
    props = life.c.show(UNIT, "UnitFileState", "MainPID", "User")
    assert props["UnitFileState"] == "enabled"
    user = life.c.run(["ps", "-o", "user=", "-p", props["MainPID"]]).stdout.strip()
    assert user == "insiders"
    passwd = life.c.run(["getent", "passwd", "insiders"]).stdout.strip().split(":")
    assert passwd[5:] == [STATE, "/usr/sbin/nologin"], passwd
    assert int(passwd[2]) < 1000, "a system user"
    # Socket activation is the administrator's choice; the user unit is enabled for no one.
    for unit in ("insiders.socket", "insiders-control.socket"):
        assert life.c.show(unit, "UnitFileState")["UnitFileState"] == "disabled", unit
    enabled = life.c.run(["systemctl", "--global", "is-enabled", UNIT], check=False).stdout
    assert enabled.strip() == "disabled"
    security = life.c.run(["systemd-analyze", "security", "--no-pager", UNIT]).stdout
    assert re.search(r"Overall exposure level for insiders\.service: \d\.\d OK", security)


def test_a_member_of_the_group_uses_insidersctl(life: Life) -> None:
    life.c.run(["useradd", "--create-home", "--groups", "insiders", MEMBER])
    out = ctl(life, "status")
    assert f"insidersd {life.debs.release_version} " in out, out
    assert f"{life.url}/simple/" in out
    # A local repository to watch (outside /home: the service has ProtectHome=yes).
    life.c.sh(
        "mkdir -p /srv/probe-repo && cd /srv/probe-repo && git init -q -b main && "
        'printf \'[project]\\nname = "deb-probe"\\nversion = "0.0.0"\\n\' >pyproject.toml && '
        "git add . && git -c user.name=t -c user.email=t@example.org commit -q -m init"
    )
    # The service runs git as its own user, with no system config: a repository owned by another
    # user is marked safe in the service's own ~/.gitconfig, work tree and .git, as git asks (an
    # administrator's step; a URL needs none).
    as_service = ["runuser", "-u", "insiders", "--", "env", f"HOME={STATE}"]
    for path in ("/srv/probe-repo", "/srv/probe-repo/.git"):
        life.c.run([*as_service, "git", "config", "--global", "--add", "safe.directory", path])
    added = ctl(life, "repos", "add", "/srv/probe-repo:deb-probe")
    assert "added deb-probe" in added, added
    # The hardened service reaches it with git (no version tag yet: nothing to build).
    ctl(life, "update", "deb-probe")
    assert "deb-probe" in ctl(life, "repos", "list")


def test_a_user_outside_the_group_is_refused(life: Life) -> None:
    life.c.run(["useradd", "--create-home", OUTSIDER])
    result = life.c.run(["insidersctl", "status"], user=OUTSIDER, check=False)
    assert result.returncode != 0
    assert "group insiders" in result.stderr, result.stderr


def test_server_enable_on_the_package_enables_its_user_unit(life: Life) -> None:
    """The package's user unit runs the package's insidersd: `server enable --user` writes
    nothing and enables it; `server disable --user` stops it and removes nothing."""
    c, uid = life.c, life.c.uid(OUTSIDER)
    c.run(["loginctl", "enable-linger", OUTSIDER])
    c.wait_for(f"user@{uid}.service", "ActiveState", "active", timeout=60)
    config = f'[server]\nport = {free_port()}\n\n[upstream]\nmode = "none"\n'
    c.run(["mkdir", "-p", "/home/outsider/.config/insiders"], user=OUTSIDER)
    c.run(["sh", "-c", "cat > ~/.config/insiders/config.toml"], user=OUTSIDER, input=config)
    enabled = c.run(["insidersctl", "server", "enable", "--user"], user=OUTSIDER, check=False)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert enabled.stdout.splitlines()[:2] == [
        "/usr/lib/systemd/user/insiders.service (installed with insiders) runs this insidersd: "
        "nothing to write",
        "ran `systemctl --user enable --now insiders.service`",
    ]
    assert not c.path("/home/outsider/.config/systemd/user/insiders.service").exists()
    own = c.run(["insidersctl", "status"], user=OUTSIDER, check=False)
    assert own.returncode == 0, own.stdout + own.stderr  # the user's own daemon answers
    disabled = c.run(["insidersctl", "server", "disable", "--user"], user=OUTSIDER, check=False)
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    assert c.show("insiders", "ActiveState", user=OUTSIDER) == {"ActiveState": "inactive"}
    c.run(["loginctl", "disable-linger", OUTSIDER])


# -- 2. use -------------------------------------------------------------------------------------


def test_twine_uploads_with_a_token_and_pip_installs(life: Life) -> None:
    apt_get(life, "install", "--no-install-recommends", "twine", "python3-pip")
    life.token = ctl(life, "tokens", "create", "deb-test").strip()
    life.c.run(["install", "-d", "-o", MEMBER, "/srv/upload"])
    twine_upload(life, "1.0")
    assert pip_install(life) == "1.0"


def test_the_autopkgtests_pass(life: Life) -> None:
    """debian/tests/ as autopkgtest would run them (needs-root, the package installed)."""
    tests = life.c.path("/srv/autopkgtest")
    tests.mkdir()
    control = (ROOT / "debian/tests/control").read_text()
    names = [
        name for line in re.findall(r"^Tests:(.*)$", control, re.MULTILINE) for name in line.split()
    ]
    assert names
    for name in names:
        script = tests / name
        script.write_bytes((ROOT / "debian/tests" / name).read_bytes())
        script.chmod(0o755)
        result = life.c.run(
            [f"/srv/autopkgtest/{name}"], env={"AUTOPKGTEST_TMP": "/tmp"}, check=False
        )
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"


# -- 3. upgrade ---------------------------------------------------------------------------------


def test_an_upgrade_restarts_the_service_and_keeps_everything(life: Life) -> None:
    config = life.c.path(CONFIG)
    edited = config.read_text().replace(*EDIT)
    assert edited != config.read_text()
    config.write_text(edited)
    life.c.run(["systemctl", "reload", UNIT])
    assert status(life)["watcher"]["interval"] == 1234.0
    before = life.c.show(UNIT, "InvocationID")["InvocationID"]

    out = apt_get(life, "install", f"{DEBS_INSIDE}/{life.debs.upgrade.deb.name}")
    assert "insiders" in out

    wait_active(life)
    assert life.c.show(UNIT, "InvocationID")["InvocationID"] != before, "not restarted"
    report = status(life)
    assert report["version"] == life.debs.upgrade_version
    assert config.read_text() == edited
    assert not list(config.parent.glob("config.toml.dpkg-*"))
    assert report["watcher"]["interval"] == 1234.0
    assert "deb-test" in ctl(life, "tokens", "list")
    assert "deb-probe" in ctl(life, "repos", "list")
    page = life.c.run(["python3", "-c", _GET, f"{life.url}/simple/{PROBE}/"]).stdout
    assert life.uploads[0] in page
    # The token made before the upgrade still uploads, and pip gets the newer version.
    twine_upload(life, "1.1")
    assert pip_install(life) == "1.1"
    # Nothing went wrong on the way, by the service's own account (pip, recommended, was there
    # to name the upstream index). The first token's path is logged as a warning, to be seen.
    warnings = journal(life.c, "-u", UNIT, "-p", "warning").splitlines()
    assert [w for w in warnings if "created the first upload token" not in w] == []


_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


# -- 4. remove, purge ---------------------------------------------------------------------------


def test_remove_stops_the_service_and_keeps_config_and_data(life: Life) -> None:
    apt_get(life, "remove", "insiders")
    assert installed(life)["insiders"] == "rc "
    assert life.c.show(UNIT, "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert life.c.run(["pgrep", "-u", "insiders"], check=False).returncode == 1
    assert life.c.path(CONFIG).read_text().count(EDIT[1]) == 1
    stored = life.c.run(["find", STATE, "-name", "*.whl"]).stdout
    assert all(name in stored for name in life.uploads), stored


def test_purge_removes_config_and_data_and_keeps_the_user(life: Life) -> None:
    apt_get(life, "purge", "insiders")
    assert "insiders" not in installed(life)
    for path in ("/etc/insiders", STATE, "/var/cache/insiders", "/run/insiders"):
        assert not life.c.path(path).exists(), path
    # The system user stays (usual for system users: its ids may still be on files elsewhere and
    # a reinstall gets the same ones), but nothing of the package is left owned by it.
    assert life.c.run(["getent", "passwd", "insiders"], check=False).returncode == 0
    owned = life.c.run(
        ["find", "/", "-xdev", "-user", "insiders", "-not", "-path", "/proc/*"], check=False
    ).stdout
    assert not owned.strip(), owned


def test_nothing_of_the_package_is_left(life: Life) -> None:
    for path in ("/usr/bin/insidersd", "/usr/lib/systemd/system/insiders.service"):
        assert not life.c.path(path).exists(), path
    assert not life.c.path(f"{PYTHON_DIST}/insiders").exists()
