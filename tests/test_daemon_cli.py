"""insidersd as a command: its config errors, its defaults, and a graceful stop."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from insiders.__main__ import report_failures
from insiders.errors import ConfigError, UpstreamLoop
from tests.support import INSIDERSD, Daemon, isolated_env, make_wheel, wheel_filename


def run_insidersd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSIDERSD), *args],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server\nport = 1", "not valid TOML"),
        ("[server]\nport = 'eighty'", "key `server.port`: Expected `int`, got `str`"),
        ("[server]\nprot = 80", "key `server`: Object contains unknown field `prot`"),
        (
            "[upstream]\nmode = 'mirror'",
            "key `upstream.mode`: Invalid enum value 'mirror' "
            "(expected one of: redirect, proxy, cache, none)",
        ),
        (
            "[projects.demo]\nupstream = 'both'",
            "key `projects.<name>.upstream`: Invalid enum value 'both' "
            "(expected one of: shadow, merge)",
        ),
        ("[server]\nport = 70000", "key `server.port`: Expected `int` <= 65535"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    result = run_insidersd(tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"insidersd: {config}: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_default_config_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("log-level = 'loud'\n")
    result = run_insidersd(tmp_path)
    assert result.returncode == 2
    assert str(config) in result.stderr


def test_named_config_must_exist(tmp_path: Path) -> None:
    result = run_insidersd(tmp_path, "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_insidersd(tmp_path, "--port", str(port), "--upstream-mode", "none")
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr


def test_defaults_bind_loopback_and_xdg_dirs(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, ["--upstream-mode", "none"]).start()
    try:
        assert daemon.url.startswith("http://127.0.0.1:")
        assert (tmp_path / "data" / "insiders" / "upload-token").stat().st_mode & 0o777 == 0o600
        assert "upload-token" in daemon.log()
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_lets_a_download_in_flight_finish(tmp_path: Path, sig: signal.Signals) -> None:
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    payload = bytes(range(256)) * (64 << 10)  # 16 MiB, incompressible enough
    wheel = make_wheel("big", "1.0", payload)
    path = tmp_path / wheel_filename("big", "1.0")
    path.write_bytes(wheel)
    assert daemon.upload(path, name="big", version="1.0").status_code == 200

    received = bytearray()
    started = threading.Event()

    def slow_download() -> None:
        with httpx.stream("GET", f"{daemon.url}/files/big/{path.name}", timeout=30) as response:
            for chunk in response.iter_bytes(64 << 10):
                received.extend(chunk)
                started.set()
                time.sleep(0.005)

    reader = threading.Thread(target=slow_download)
    reader.start()
    assert started.wait(10)
    assert daemon.proc is not None
    daemon.proc.send_signal(sig)
    reader.join(30)
    assert daemon.proc.wait(30) == 0
    assert bytes(received) == wheel
    assert f"{sig.name}: stopping" in daemon.log()


def test_insidersctl_reload_returns_once_the_settings_are_in_force(tmp_path: Path) -> None:
    """What the user unit's ExecReload runs: RELOADING=1 ... READY=1 around the reload, exit 0
    with the new settings in force, exit 1 with the reason when the file is refused."""
    home = tmp_path / "home"
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[watcher]\ninterval = 600.0\n")
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    assert daemon.notify is not None
    notify = daemon.notify
    try:
        assert notify.next().startswith("READY=1")

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            command = [str(INSIDERSD.parent / "insidersctl"), *args]
            env = isolated_env(home)
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)

        config.write_text("[watcher]\ninterval = 1234.0\n")
        assert ctl("reload").returncode == 0
        messages = [notify.next() for _ in range(2)]
        assert messages[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert messages[1].startswith("READY=1\nSTATUS=")
        assert '"interval": 1234.0' in ctl("watcher", "status", "--json").stdout

        config.write_text("[watcher]\ninterval = 5.0\nno-such-key = 1\n")
        refused = ctl("reload")
        assert refused.returncode == 1
        assert "reload refused, the running settings stay" in refused.stderr
        assert "no-such-key" in refused.stderr
        assert '"interval": 1234.0' in ctl("watcher", "status", "--json").stdout
    finally:
        daemon.stop()


def test_a_reload_gives_the_running_index_its_new_upstream(tmp_path: Path) -> None:
    """Reload applies [upstream] to the index that serves (IndexApp.reconfigure): a project not
    hosted here turns from "not found" into a redirect to the upstream the file now names."""
    home = tmp_path / "home"
    config = home / "config" / "insiders" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[upstream]\nmode = "none"\n')
    daemon = Daemon(home, []).start()
    try:
        with daemon.client() as client:
            assert client.get("/simple/elsewhere/").status_code == 404
            config.write_text(
                '[upstream]\nmode = "redirect"\nurl = "http://upstream.invalid/simple/"\n'
            )
            reload = subprocess.run(
                [str(INSIDERSD.parent / "insidersctl"), "reload"],
                env=isolated_env(home),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert reload.returncode == 0, reload.stderr
            moved = client.get("/simple/elsewhere/")
            assert moved.status_code == 302
            assert moved.headers["location"] == "http://upstream.invalid/simple/elsewhere/"
    finally:
        daemon.stop()


def test_failures_are_told_kind_by_kind_and_the_last_kind_sets_the_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What `except*` clauses in that order did: each failure once, grouped by kind, and the exit
    status of the last kind present (an OSError after a ConfigError: 1)."""
    group = ExceptionGroup(
        "run", [OSError("port taken"), ExceptionGroup("inner", [ConfigError("bad cert")])]
    )
    with caplog.at_level(logging.INFO, logger="insiders"):
        assert report_failures(group, started=False) == 1
        assert report_failures(ExceptionGroup("run", [UpstreamLoop("itself")]), started=True) == 2
        assert report_failures(ExceptionGroup("run", [KeyError("x")]), started=True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "cannot start: bad cert",
        "cannot start: port taken",
        "itself",
        "insidersd stopped: KeyError: 'x'",
    ]
    assert caplog.records[-1].exc_info is not None  # a bug keeps its traceback
