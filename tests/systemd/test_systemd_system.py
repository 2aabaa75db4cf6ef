"""The system unit under a real systemd: readiness, reload, watchdog, journald priorities, stop.

The tests run in file order on one container and build on each other (the package uploaded first
is what pip installs and what must still be served after the watchdog restart).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.support import WHEELHOUSE, free_port
from tests.systemd.helpers import (
    PROBE,
    accepts,
    get,
    journal,
    pip_install,
    probe_wheel,
    upload,
    wait_http,
)
from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.systemd

UNIT = "insiders.service"
CONFIG = "/etc/insiders/config.toml"
# Short, so that the watchdog test is quick; the daemon must keep pinging through every other test.
WATCHDOG_SEC = 4
NOT_HOSTED = "not-hosted-here"


def config(port: int, upstream: str = 'mode = "none"') -> str:
    return f'log-level = "info"\n\n[server]\nport = {port}\n\n[upstream]\n{upstream}\n'


class System:
    def __init__(self, container: Container, port: int) -> None:
        self.c = container
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def write_config(self, text: str) -> None:
        self.c.path(CONFIG).write_text(text)

    def show(self, *props: str) -> dict[str, str]:
        return self.c.show(UNIT, *props)

    def journal(self, *args: str) -> str:
        return journal(self.c, "-u", UNIT, *args)


@pytest.fixture(scope="module")
def system(container: Container) -> Iterator[System]:
    port = free_port()
    container.run(["mkdir", "-p", "/etc/insiders", "/run/systemd/system/insiders.service.d"])
    container.path("/run/systemd/system/insiders.service.d/test.conf").write_text(
        f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nTimeoutStartSec=30s\n"
    )
    container.run(["systemctl", "daemon-reload"])
    # A secret in the system credential store reaches the service as $CREDENTIALS_DIRECTORY/NAME.
    container.run(["mkdir", "-p", "-m", "0700", "/etc/credstore"])
    container.path("/etc/credstore/github-token").write_text("not-a-real-token\n")
    running = System(container, port)
    running.write_config(config(port))
    yield running
    container.run(["systemctl", "stop", UNIT], check=False)
    container.run(["rm", "-rf", "/run/systemd/system/insiders.service.d"])
    container.run(["systemctl", "daemon-reload"])


def test_activating_until_ready_then_active(system: System) -> None:
    system.c.run(["systemctl", "start", "--no-block", UNIT])
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while not seen or seen[-1] != "active":
        state = system.show("ActiveState")["ActiveState"]
        if not seen or seen[-1] != state:
            seen.append(state)
        assert state in ("inactive", "activating", "active"), system.journal()
        assert time.monotonic() < deadline, (seen, system.journal())
        if state != "active":
            time.sleep(0.02)
    # READY=1 came only once everything was up: at the first sight of `active` the index answers
    # at once (no retry) and the control socket is there.
    assert get(f"{system.url}/simple/").status_code == 200
    assert accepts(system.c.path("/run/insiders/control.sock"))
    assert "activating" in seen, seen
    assert system.c.path("/run/credentials/insiders.service/github-token").is_file()
    props = system.show(
        "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic", "StatusText"
    )
    took = (
        int(props["ActiveEnterTimestampMonotonic"]) - int(props["InactiveExitTimestampMonotonic"])
    ) / 1e6
    print(f"\nsystemctl start -> active: {took:.2f}s; status: {props['StatusText']}")
    assert props["StatusText"], "READY=1 comes with a STATUS= line"


def test_insidersctl_status_answers(system: System) -> None:
    result = system.c.run(["insidersctl", "status"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()


# A hostile build hook under the system service: what it reaches for (the daemon's tokens, its
# credentials, its configuration and control socket, its environment through /proc, a write into
# its state), then an ordinary hatchling build, so the release is published as any other.
HOSTILE_BACKEND = """\
import glob, os, socket
from hatchling.build import *  # noqa: F403

for target in (
    "/var/lib/insiders/upload-token",
    "/var/lib/insiders/tokens.json",
    "/run/credentials/insiders.service/github-token",
    "/etc/credstore/github-token",
    "/etc/insiders/config.toml",
):
    try:
        print("READ", target, open(target).read(), flush=True)
    except OSError as error:
        print("HIDDEN", target, error.strerror, flush=True)
try:
    socket.socket(socket.AF_UNIX).connect("/run/insiders/control.sock")
    print("READ control socket: connected", flush=True)
except OSError as error:
    print("HIDDEN control socket", error.strerror, flush=True)
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        if b"CREDENTIALS_DIRECTORY" in open(path, "rb").read():
            print("READ", path, flush=True)
    except OSError:
        pass
try:
    open("/var/lib/insiders/escaped", "w").write("x")
    print("READ wrote /var/lib/insiders/escaped", flush=True)
except OSError as error:
    print("REFUSED /var/lib/insiders/escaped", error.strerror, flush=True)
print("SANDBOX UID", os.getuid(), "ENV", sorted(os.environ), flush=True)
"""


def test_a_hostile_build_under_the_system_unit_gets_nothing_of_the_daemon(
    system: System,
) -> None:
    """bubblewrap works under the hardened unit (its namespaces and mount calls are allowed): the
    build sees no token, credential, configuration, control socket or daemon environment, writes
    nowhere but its scratch, and still builds, its build backend installed through the index."""
    token = system.c.path("/var/lib/insiders/upload-token").read_text().strip()
    for wheel in sorted(WHEELHOUSE.glob("*.whl")):
        assert upload(f"{system.url}/", wheel, token).status_code == 200
    source = "/var/lib/insiders/src/hostile"
    system.c.run(["runuser", "-u", "insiders", "--", "mkdir", "-p", source])
    system.c.path(f"{source}/pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n\n[project]\nname = "hostile"\nversion = "1.0"\n'
        "[tool.hatch.build.targets.wheel]\nbypass-selection = true\n"
    )
    system.c.path(f"{source}/backend.py").write_text(HOSTILE_BACKEND)
    system.c.run(["chown", "-R", "insiders:insiders", source])
    git = ["runuser", "-u", "insiders", "--", "git", "-C", source]
    system.c.run([*git, "init", "--quiet"])
    system.c.run([*git, "add", "-A"])
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    system.c.run([*git, *identity, "commit", "--quiet", "-m", "1.0"])
    system.c.run([*git, "tag", "v1.0"])
    system.c.run(["insidersctl", "repos", "add", f"{source}:hostile"])
    result = system.c.run(["insidersctl", "update", "--wait", "hostile"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr + system.journal()
    log = system.c.path("/var/lib/insiders/logs/hostile/1.0.log").read_text()
    # `repos add` started the check; `update --wait` waited for it. It published the release:
    projects = system.c.run(["insidersctl", "projects", "list"]).stdout
    assert re.search(r"^hostile\s+1\.0\s", projects, re.M), projects
    assert "insiders: sandbox: bubblewrap" in log, log
    assert "not refused" not in log, log  # the unit lets the box scope its Landlock domain
    assert "READ" not in log, log
    # The hook runs once per build step; every time, each of the six was hidden.
    assert log.count("HIDDEN") >= 6, log
    assert log.count("HIDDEN") == 6 * log.count("SANDBOX UID"), log
    assert "REFUSED /var/lib/insiders/escaped" in log, log
    assert "CREDENTIALS_DIRECTORY" not in log.split("SANDBOX UID", 1)[1], log
    assert not system.c.path("/var/lib/insiders/escaped").exists()
    assert "builds in bubblewrap" in system.c.run(["insidersctl", "status"]).stdout
    # Nothing is left of the build: its scratch directory is gone with it.
    assert list(system.c.path("/var/cache/insiders/builds").iterdir()) == []
    system.c.run(["insidersctl", "repos", "remove", "hostile"])


def test_pip_install_through_the_index(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> None:
    token = system.c.path("/var/lib/insiders/upload-token").read_text().strip()
    wheel = probe_wheel(tmp_path_factory.mktemp("probe"), "1.0")
    response = upload(f"{system.url}/", wheel, token)
    assert response.status_code == 200, response.text
    assert pip_install(system.c, f"{system.url}/simple/") == "1.0"


def test_reload_rereads_the_config(system: System) -> None:
    assert get(f"{system.url}/simple/{NOT_HOSTED}/").status_code == 404
    upstream = "http://127.0.0.1:9/simple/"
    system.write_config(config(system.port, f'mode = "redirect"\nurl = "{upstream}"'))
    pid = system.show("MainPID")["MainPID"]
    # Type=notify-reload: this returns once the daemon said RELOADING=1 and then READY=1 again.
    system.c.run(["systemctl", "reload", UNIT])
    assert system.show("MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
    response = get(f"{system.url}/simple/{NOT_HOSTED}/")
    assert response.is_redirect, (response.status_code, system.journal())
    assert response.headers["location"].startswith(upstream)


def test_a_bad_config_is_refused_with_an_error_in_the_journal(system: System) -> None:
    system.write_config("[server\nport = ")
    system.c.run(["systemctl", "reload", UNIT])
    assert system.show("ActiveState")["ActiveState"] == "active"
    # The configuration in force is still the last good one.
    assert get(f"{system.url}/simple/{NOT_HOSTED}/").is_redirect

    errors = system.journal("-p", "err")
    everything = system.journal()
    assert CONFIG in errors, errors  # the provoked error, naming the file
    # Info lines are in the journal, with their priority: `-p err` leaves them out.
    info = [line for line in everything.splitlines() if "serving on" in line]
    assert info, everything
    assert not any("serving on" in line for line in errors.splitlines()), errors
    # journald stamps the lines; the daemon adds no timestamp of its own.
    assert not re.search(r"^\d\d:\d\d:\d\d", everything, re.MULTILINE), everything

    system.write_config(config(system.port, 'mode = "redirect"\nurl = "http://127.0.0.1:9/"'))
    system.c.run(["systemctl", "reload", UNIT])


def test_the_watchdog_restarts_a_hung_daemon(system: System) -> None:
    before = system.show("NRestarts", "MainPID", "ActiveState")
    assert before["ActiveState"] == "active", system.journal()
    assert int(before["MainPID"]) > 1  # kill -STOP 0 would stop our own process group
    system.c.run(["kill", "-STOP", before["MainPID"]])
    system.c.wait_for(UNIT, "NRestarts", str(int(before["NRestarts"]) + 1), timeout=30)
    system.c.wait_for(UNIT, "ActiveState", "active", timeout=30)
    assert system.show("MainPID")["MainPID"] != before["MainPID"]
    assert "Watchdog timeout" in system.journal()
    # It serves again, and what was uploaded before is still there.
    response = wait_http(f"{system.url}/simple/{PROBE}/")
    assert response.status_code == 200
    assert "insiders_systemd_probe-1.0-py3-none-any.whl" in response.text


def test_stop_ends_with_success(system: System) -> None:
    system.c.run(["systemctl", "stop", UNIT])
    # Not `timeout` (it had to be killed), not `exit-code` (it exited non-zero).
    props = system.show("Result", "ActiveState", "ExecMainStatus")
    assert props == {"Result": "success", "ActiveState": "inactive", "ExecMainStatus": "0"}, (
        system.journal()
    )
