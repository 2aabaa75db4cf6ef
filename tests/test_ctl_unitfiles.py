"""`insidersctl server enable|disable` without a running systemd: the unit files it writes for an
installation from a wheel (its own paths, units/ as the wheel's data), what it runs, and what it
refuses.

PID 1 here is not systemd, so `systemctl` is a script on PATH that records its arguments; the
same commands under a real systemd (the unit starts, answers, reloads, stops) are in
tests/systemd/test_systemd_enable.py.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from insidersctl.unitfiles import MARKER, exec_word, hidden_from_system_unit, plan, render
from tests.support import BIN, ROOT, Daemon, build_insiders_wheel, isolated_env

FAKE_SYSTEMCTL = """\
#!/bin/sh
echo "$*" >> "$HOME/systemctl.log"
case "$*" in
    *Version*) echo 257;;
    *LoadState*) echo loaded;;
    *is-active*) test -e "$HOME/active";;
esac
"""


def test_exec_lines_name_the_installation_and_nothing_else_changes() -> None:
    template = (ROOT / "units/user/insiders.service").read_text()
    scripts = {
        "insidersd": Path("/opt/my env/100%/bin/insidersd"),
        "insidersctl": Path("/opt/my env/100%/bin/insidersctl"),
    }
    text = render(template, scripts)
    first, *rest = text.splitlines()
    assert first.startswith(MARKER)
    assert 'ExecStart="/opt/my env/100%%/bin/insidersd"' in rest
    assert 'ExecReload="/opt/my env/100%%/bin/insidersctl" reload' in rest
    unchanged = [line for line in rest if not line.startswith(("ExecStart=", "ExecReload="))]
    assert unchanged == [
        line for line in template.splitlines() if not line.startswith(("ExecStart=", "ExecReload="))
    ]
    assert exec_word(Path("/home/u/.venv/bin/insidersd")) == "/home/u/.venv/bin/insidersd"
    assert exec_word(Path('/a"b\\c/$x')) == '"/a\\"b\\\\c/$$x"'


def test_a_foreign_file_is_refused_and_ours_is_updated(tmp_path: Path) -> None:
    (tmp_path / "foreign.service").write_text("[Service]\nExecStart=/bin/true\n")
    (tmp_path / "ours.service").write_text(f"{MARKER} for an older one\n")
    (tmp_path / "same.service").write_text(f"{MARKER}\nsame\n")
    changes = plan(
        tmp_path,
        {
            "foreign.service": f"{MARKER}\nnew\n",
            "ours.service": f"{MARKER}\nnew\n",
            "same.service": f"{MARKER}\nsame\n",
            "absent.service": f"{MARKER}\nnew\n",
        },
    )
    assert [(c.path.name, c.state) for c in changes] == [
        ("foreign.service", "foreign"),
        ("ours.service", "updated"),
        ("same.service", "unchanged"),
        ("absent.service", "new"),
    ]


def test_the_system_unit_cannot_run_from_a_home() -> None:
    """ProtectHome=yes hides /home, /root and /run/user from the system service."""
    assert hidden_from_system_unit([Path("/opt/insiders/bin/insidersd")]) is None
    assert hidden_from_system_unit(
        [Path("/opt/insiders/bin/insidersd"), Path("/home/ada/venvs/py3.12/bin/python")]
    ) == Path("/home/ada/venvs/py3.12/bin/python")
    assert hidden_from_system_unit([Path("/homeless/insidersd")]) is None


# -- a pip user's installation -----------------------------------------------------------------


@dataclass
class Installed:
    venv: Path
    home: Path

    @property
    def units(self) -> Path:
        return self.home / "config" / "systemd" / "user"

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        # PATH: the recording systemctl, then the system; not the venv's bin (as after pip install
        # into a venv that is not activated).
        env = isolated_env(self.home, PATH=f"{self.home / 'fake'}:/usr/bin:/bin")
        return subprocess.run(
            [str(self.venv / "bin" / "insidersctl"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def systemctl_calls(self) -> list[str]:
        log = self.home / "systemctl.log"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        # Leave out the questions.
        return [call for call in calls if "--property=" not in call and "is-active" not in call]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed into a venv of its own, with no editable link to this checkout: its
    units are the wheel's data. Its dependencies come from this test run's environment."""
    work = tmp_path_factory.mktemp("wheel install")  # a blank in the path, as users have
    wheel = build_insiders_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [BIN / "pip", "--python", venv / "bin/python", "install", "-q", "--no-deps", wheel],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    # msgspec and the rest from here; a path added by a .pth file has its own .pth files ignored,
    # so this checkout's editable install stays out of it.
    purelib = Path(
        subprocess.run(
            [venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "deps-of-the-test-run.pth").write_text(sysconfig.get_path("purelib") + "\n")
    home = work / "home"
    (home / "fake").mkdir(parents=True)
    (home / "fake" / "systemctl").write_text(FAKE_SYSTEMCTL)
    (home / "fake" / "systemctl").chmod(0o755)
    return Installed(venv, home)


def test_enable_writes_this_installations_units_then_reloads_and_starts(
    installed: Installed,
) -> None:
    result = installed.ctl("server", "enable", "--user")
    assert result.returncode == 0, result.stderr
    units = installed.units
    bin = installed.venv / "bin"
    assert result.stdout.splitlines()[:5] == [
        f"wrote {units}/insiders-control.socket",
        f"wrote {units}/insiders.service",
        f"wrote {units}/insiders.socket",
        "ran `systemctl --user daemon-reload`",
        "ran `systemctl --user enable --now insiders.service`",
    ]
    assert installed.systemctl_calls() == [
        "--user daemon-reload",
        "--user enable --now insiders.service",
    ]
    service = (units / "insiders.service").read_text()
    assert f'ExecStart="{bin}/insidersd"\n' in service  # quoted: the path has a blank
    assert f'ExecReload="{bin}/insidersctl" reload\n' in service
    assert [line for line in service.splitlines() if "/usr/bin" in line and line[0] != "#"] == []
    # The rest is the units/ file as the wheel carries it.
    for name in ("insiders.socket", "insiders-control.socket"):
        text = (units / name).read_text()
        assert text.split("\n", 1)[1] == (ROOT / "units/user" / name).read_text()

    # Again: nothing to write, no daemon-reload; enabling is idempotent in systemctl.
    again = installed.ctl("server", "enable", "--user")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:4] == [
        f"unchanged {units}/insiders-control.socket",
        f"unchanged {units}/insiders.service",
        f"unchanged {units}/insiders.socket",
        "ran `systemctl --user enable --now insiders.service`",
    ]
    assert installed.systemctl_calls() == ["--user enable --now insiders.service"]

    only = installed.ctl("server", "enable", "--user", "--no-start")
    assert only.returncode == 0, only.stderr
    assert installed.systemctl_calls() == ["--user enable insiders.service"]


def test_a_unit_someone_else_wrote_is_kept_without_force(installed: Installed) -> None:
    installed.units.mkdir(parents=True, exist_ok=True)
    theirs = installed.units / "insiders.service"
    mine = "[Service]\nExecStart=/srv/my-own/insidersd --port 8080\n"
    theirs.write_text(mine)
    installed.systemctl_calls()

    refused = installed.ctl("server", "enable", "--user")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"insidersctl: {theirs}: not written by insidersctl, left as it is (--force replaces it)\n"
    )
    assert theirs.read_text() == mine
    assert installed.systemctl_calls() == []  # nothing enabled either

    (installed.home / "active").touch()  # the service runs, started from their unit
    try:
        forced = installed.ctl("server", "enable", "--user", "--force")
    finally:
        (installed.home / "active").unlink()
    assert forced.returncode == 0, forced.stderr
    assert f"replaced {theirs}" in forced.stdout.splitlines()
    assert theirs.read_text().startswith(MARKER)
    assert forced.stderr == (
        "insidersctl: insiders.service runs as it was started: `systemctl --user restart "
        "insiders` runs this one\n"
    )


def test_disable_stops_and_removes_only_its_own_files(installed: Installed) -> None:
    assert installed.ctl("server", "enable", "--user").returncode == 0
    theirs = installed.units / "insiders.socket"
    theirs.write_text("[Socket]\nListenStream=127.0.0.1:9999\n")
    installed.systemctl_calls()

    result = installed.ctl("server", "disable", "--user")
    assert result.returncode == 0, result.stderr
    units = installed.units
    assert result.stdout.splitlines() == [
        "ran `systemctl --user disable --now insiders-control.socket insiders.service "
        "insiders.socket`",
        f"removed {units}/insiders-control.socket",
        f"removed {units}/insiders.service",
        f"kept {units}/insiders.socket: not written by insidersctl",
        "ran `systemctl --user daemon-reload`",
    ]
    assert installed.systemctl_calls() == [
        "--user disable --now insiders-control.socket insiders.service insiders.socket",
        "--user daemon-reload",
    ]
    assert sorted(p.name for p in units.iterdir()) == ["insiders.socket"]
    theirs.unlink()


def test_the_written_unit_verifies(installed: Installed, tmp_path: Path) -> None:
    """systemd-analyze of this machine (252 on Debian 12) reads the unit as written, with its
    ExecStart= resolved: no warning, no missing binary."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    assert installed.ctl("server", "enable", "--user").returncode == 0
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [analyze, "verify", "--user", str(installed.units / "insiders.service")],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert installed.ctl("server", "disable", "--user").returncode == 0


def test_no_user_manager_writes_nothing(installed: Installed) -> None:
    """Without a service manager that answers, nothing is written (and it says why)."""
    fake = installed.home / "fake" / "systemctl"
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    try:
        result = installed.ctl("server", "enable", "--user")
    finally:
        fake.write_text(FAKE_SYSTEMCTL)
    assert result.returncode == 1
    assert result.stderr == textwrap.dedent(
        """\
        insidersctl: the user's service manager does not answer (`systemctl --user show \
--property=Version --value`: Failed to connect to bus: No medium found)
        """
    )
    assert not installed.units.exists() or not any(installed.units.iterdir())


def test_a_daemon_started_by_hand_is_left_running(installed: Installed) -> None:
    """`make run`, then `server enable`: the unit is enabled, not started (its insidersd would
    refuse to start beside the running one), and it says what to do."""
    daemon = Daemon(installed.home, ["--upstream-mode", "none"]).start()
    try:
        installed.systemctl_calls()
        result = installed.ctl("server", "enable", "--user")
        assert result.returncode == 0, result.stderr
        assert daemon.proc is not None
        assert result.stderr == (
            f"insidersctl: insidersd runs already, started without systemd (pid "
            f"{daemon.proc.pid}): the unit is enabled, not started; stop that one "
            f"(`{shlex.quote(str(installed.venv / 'bin/insidersctl'))} server stop`), then "
            "`systemctl --user start insiders`\n"
        )
        assert installed.systemctl_calls()[-1] == "--user enable insiders.service"
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
        installed.ctl("server", "disable", "--user")
