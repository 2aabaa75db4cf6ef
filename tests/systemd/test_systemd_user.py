"""The user unit under a real systemd: a user with linger enables it and uses the index and
insidersctl as that user, with nothing but the XDG defaults.

Every test runs under systemd 257 (trixie) and 252 (bookworm, as Debian 12 and RHEL 9): the user
unit is the one `pip install` users copy, onto whatever systemd their machine has."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support import free_port
from tests.systemd.helpers import accepts, get, pip_install, probe_wheel, upload
from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.systemd

USER = "alice"
DROP_IN = ".config/systemd/user/insiders.service.d"


class Alice:
    def __init__(self, container: Container, port: int) -> None:
        self.c = container
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.home = f"/home/{USER}"

    def run(self, *command: str, check: bool = True) -> str:
        return self.c.run(list(command), user=USER, check=check).stdout

    def journal(self) -> str:
        return self.c.run(
            ["journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_USER_UNIT=insiders.service"],
            check=False,
        ).stdout


@pytest.fixture(scope="module", params=["trixie", "bookworm"])
def alice(request: pytest.FixtureRequest) -> Iterator[Alice]:
    container: Container = request.getfixturevalue(
        "container" if request.param == "trixie" else "bookworm"
    )
    port = free_port()
    container.sh(f"id {USER} >/dev/null 2>&1 || useradd -m {USER}")
    uid = container.uid(USER)
    container.run(["loginctl", "enable-linger", USER])
    container.wait_for(f"user@{uid}.service", "ActiveState", "active", timeout=60)
    me = Alice(container, port)
    me.run("mkdir", "-p", f"{me.home}/.config/insiders", f"{me.home}/{DROP_IN}")
    # A daemon that never says READY=1 fails the test in 30 s rather than 90.
    me.run("sh", "-c", f"printf '[Service]\\nTimeoutStartSec=30s\\n' > {me.home}/{DROP_IN}/t.conf")
    me.run(
        "sh",
        "-c",
        f"printf '[server]\\nport = {port}\\n\\n[upstream]\\nmode = \"none\"\\n' "
        f"> {me.home}/.config/insiders/config.toml",
    )
    yield me
    me.run("systemctl", "--user", "disable", "--now", "insiders", check=False)


def test_enable_now_starts_it_for_the_user(alice: Alice) -> None:
    started = time.monotonic()
    alice.run("systemctl", "--user", "enable", "--now", "insiders")
    took = time.monotonic() - started
    assert alice.run("systemctl", "--user", "is-active", "insiders").strip() == "active"
    assert alice.run("systemctl", "--user", "is-enabled", "insiders").strip() == "enabled"
    print(f"\nsystemctl --user enable --now -> active: {took:.2f}s")
    assert get(f"{alice.url}/simple/").status_code == 200
    assert "serving on" in alice.journal()


def test_the_user_uses_the_index(alice: Alice, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The daemon keeps its data in the user's XDG data directory.
    token_file = alice.c.path(f"{alice.home}/.local/share/insiders/upload-token")
    token = token_file.read_text().strip()
    wheel = probe_wheel(tmp_path_factory.mktemp("alice"), "2.0")
    response = upload(f"{alice.url}/", wheel, token)
    assert response.status_code == 200, response.text
    assert pip_install(alice.c, f"{alice.url}/simple/", user=USER) == "2.0"


def test_the_user_uses_insidersctl(alice: Alice) -> None:
    uid = alice.c.uid(USER)
    assert accepts(alice.c.path(f"/run/user/{uid}/insiders/control.sock"))
    result = alice.c.run(["insidersctl", "status"], user=USER, check=False)
    assert result.returncode == 0, result.stdout + result.stderr + alice.journal()
    assert result.stdout.strip()


def write_config(alice: Alice, extra: str) -> None:
    config = f'[server]\nport = {alice.port}\n\n[upstream]\nmode = "none"\n{extra}'
    alice.c.path(f"{alice.home}/.config/insiders/config.toml").write_text(config)


def test_the_unit_is_what_this_systemd_understands(alice: Alice) -> None:
    """No key this systemd ignores (it would warn, and run the service as another Type)."""
    verify = alice.c.run(
        ["systemd-analyze", "verify", "--user", "/usr/lib/systemd/user/insiders.service"],
        user=USER,
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, "")
    shown = alice.c.show("insiders", "Type", "ActiveState", "NRestarts", user=USER)
    assert shown == {"Type": "notify", "ActiveState": "active", "NRestarts": "0"}


def test_reload_waits_and_applies_the_new_settings(alice: Alice) -> None:
    write_config(alice, "\n[watcher]\ninterval = 1234.0\n")
    alice.run("systemctl", "--user", "reload", "insiders")
    # `systemctl reload` returned: the new interval is already in force, with no polling.
    watcher = json.loads(alice.run("insidersctl", "watcher", "status", "--json"))["watcher"]
    assert watcher["interval"] == 1234.0
    assert "configuration reloaded" in alice.journal()


def test_a_refused_reload_fails_and_the_old_settings_stay(alice: Alice) -> None:
    write_config(alice, "\n[watcher]\ninterval = 1234.0\nno-such-key = 1\n")
    result = alice.c.run(["systemctl", "--user", "reload", "insiders"], user=USER, check=False)
    assert result.returncode != 0
    assert "no-such-key" in alice.journal()
    assert alice.run("systemctl", "--user", "is-active", "insiders").strip() == "active"
    watcher = json.loads(alice.run("insidersctl", "watcher", "status", "--json"))["watcher"]
    assert watcher["interval"] == 1234.0
    write_config(alice, "")
    alice.run("systemctl", "--user", "reload", "insiders")


def test_insidersctl_server_stop_and_start_go_through_systemctl(alice: Alice) -> None:
    """`server stop` and `server start` the systemctl way: the user's manager does it, and
    insidersctl says exactly what it ran."""
    stopped = alice.c.run(["insidersctl", "server", "stop"], user=USER, check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout == "stopped insidersd: ran `systemctl --user stop insiders.service`\n"
    assert alice.run("systemctl", "--user", "is-active", "insiders", check=False).strip() == (
        "inactive"
    )
    started = alice.c.run(["insidersctl", "server", "start"], user=USER, check=False)
    assert started.returncode == 0, started.stdout + started.stderr + alice.journal()
    assert started.stdout == "started insidersd: ran `systemctl --user start insiders`\n"
    assert alice.run("systemctl", "--user", "is-active", "insiders").strip() == "active"
    again = alice.c.run(["insidersctl", "server", "start"], user=USER, check=False)
    assert again.returncode == 0
    assert again.stdout.startswith("insidersd is running already (pid ")
