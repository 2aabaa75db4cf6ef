"""insiders.systemd against real sockets: a NOTIFY_SOCKET datagram socket, and LISTEN_FDS handed
to a child process the way systemd hands them (fds from 3, LISTEN_PID set to the child's pid)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import IO

import pytest
import trio
import trio.testing

from insiders import systemd
from insiders.systemd import Notifier, keep_watchdog, listen_fds, watchdog_interval


class Receiver:
    """The service manager's end: an AF_UNIX SOCK_DGRAM socket bound where NOTIFY_SOCKET points."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(5)

    def next(self) -> str:
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return messages
        finally:
            self.sock.settimeout(5)

    def close(self) -> None:
        self.sock.close()
        if not self.path.startswith("\0"):
            os.unlink(self.path)


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    receiver = Receiver(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.path)
    yield receiver
    receiver.sock.close()


def test_ready_sends_ready_and_status_in_one_datagram(notify: Receiver) -> None:
    Notifier().ready("serving 2 projects on 127.0.0.1:31411")
    assert notify.next() == "READY=1\nSTATUS=serving 2 projects on 127.0.0.1:31411"


def test_status_stopping_watchdog(notify: Receiver) -> None:
    notifier = Notifier()
    notifier.status("watching 3 repos")
    notifier.stopping()
    notifier.stopping("stopping: 1 build interrupted")
    notifier.watchdog()
    assert [notify.next() for _ in range(4)] == [
        "STATUS=watching 3 repos",
        "STOPPING=1\nSTATUS=stopping",
        "STOPPING=1\nSTATUS=stopping: 1 build interrupted",
        "WATCHDOG=1",
    ]


def test_reloading_carries_the_monotonic_clock_in_microseconds(notify: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = notify.next().split("\n")
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_a_newline_cannot_smuggle_in_another_assignment(notify: Receiver) -> None:
    Notifier().status("one\nREADY=1")
    assert notify.next() == "STATUS=one READY=1"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"insiders-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = Receiver("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready("up")
        assert receiver.next() == "READY=1\nSTATUS=up"
    finally:
        receiver.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()


def test_a_vanished_socket_is_logged_once_and_recovered_from(
    notify: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier()
    notifier.status("one")
    assert notify.next() == "STATUS=one"
    notify.close()  # systemd went away (or re-executed and has not re-created it yet)
    with caplog.at_level(logging.INFO, logger="insiders.systemd"):
        for _ in range(3):
            notifier.watchdog()  # must not raise: the index goes on serving
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert notify.path in warnings[0].getMessage()

        again = Receiver(notify.path)  # the socket is back at the same address
        try:
            notifier.status("two")
            assert again.next() == "STATUS=two"
        finally:
            again.close()
        assert "works again" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("3000000", "self", 1.5),
        ("30000000", "other", None),  # meant for the parent that exec'd us
        ("0", "self", None),
        ("-5", "self", None),
        ("soon", "self", None),
        ("30000000", "nobody", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


class TimedNotifier(Notifier):
    """A real Notifier that also notes the trio clock's time of each WATCHDOG=1 it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.pinged_at: list[float] = []

    def watchdog(self) -> None:
        self.pinged_at.append(trio.current_time())
        super().watchdog()


async def test_keep_watchdog_pings_at_half_the_interval(
    notify: Receiver, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """On trio's autojump clock the virtual time only moves when every task waits, so the pings'
    times are exactly what the timing logic asks for, however loaded the machine is."""
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a ping every 0.05 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = TimedNotifier()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(keep_watchdog, notifier)
        await trio.sleep(0.32)
        nursery.cancel_scope.cancel()
    # One at once, then one every 0.05 s: 0, 0.05, ... 0.30 before the end at 0.32.
    offsets = [at - start for at in notifier.pinged_at]
    assert offsets == pytest.approx([0.05 * n for n in range(7)])
    assert notify.pending() == ["WATCHDOG=1"] * 7


async def test_keep_watchdog_returns_at_once_without_a_watchdog(
    notify: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with trio.fail_after(1):
        await keep_watchdog(Notifier())
        async with trio.open_nursery() as nursery:
            await nursery.start(keep_watchdog, Notifier())
    assert notify.pending() == []


async def test_keep_watchdog_stays_quiet_without_a_notify_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    with trio.fail_after(1):
        await keep_watchdog(Notifier())


# -- socket activation ----------------------------------------------------------------------------

# Plays systemd's part between fork and exec: move the passed sockets to fds 3.., set LISTEN_* for
# the pid that will run the activated program (exec keeps the pid), then exec it.
LAUNCHER = textwrap.dedent(
    """
    import fcntl, json, os, sys
    fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index)  # dup2 makes the target inheritable
        os.close(fd)
    os.environ.update(json.loads(sys.argv[2]))
    if os.environ.get("LISTEN_PID") == "self":
        os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[3]])
    """
)

ACTIVATED = textwrap.dedent(
    """
    import json, os, socket, sys
    from insiders.systemd import SocketActivationError, listen_fds
    try:
        got = listen_fds()
    except SocketActivationError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(0)
    report = {
        "names": {name: [s.fileno() for s in socks] for name, socks in got.items()},
        "families": {name: [s.family.name for s in socks] for name, socks in got.items()},
        "inheritable": [s.get_inheritable() for socks in got.values() for s in socks],
        "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
    print(json.dumps(report), flush=True)
    for name in ("http", "control"):
        for sock in got.get(name, []):
            conn, _ = sock.accept()
            conn.sendall(name.encode())
            conn.close()
    """
)


def activate(files: list[socket.socket] | list[IO[str]], env: dict[str, str]) -> Popen[str]:
    fds = [f.fileno() for f in files]
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), json.dumps(env), ACTIVATED],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    http = socket.create_server(("127.0.0.1", 0))
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(tmp_path / "control.sock"))
    control.listen()
    yield http, control
    http.close()
    control.close()


def test_named_sockets_are_handed_over(listeners: tuple[socket.socket, socket.socket]) -> None:
    http, control = listeners
    env = {"LISTEN_PID": "self", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:control"}
    with activate([http, control], env) as child:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline())
        assert report == {
            "names": {"http": [3], "control": [4]},
            "families": {"http": ["AF_INET"], "control": ["AF_UNIX"]},
            "inheritable": [False, False],  # FD_CLOEXEC: builds and git do not get them
            "env": [],  # LISTEN_* unset: a child of ours is not socket-activated by mistake
        }
        # They are the very sockets systemd (here: this test) listens on.
        with socket.create_connection(http.getsockname(), timeout=5) as conn:
            assert conn.recv(10) == b"http"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(control.getsockname())
            assert conn.recv(10) == b"control"
        assert child.wait(10) == 0


def test_sockets_without_names_are_unknown(
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    http, _ = listeners
    with activate([http], {"LISTEN_PID": "self", "LISTEN_FDS": "1"}) as child:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline())
        assert report["names"] == {"unknown": [3]}
        child.kill()


def test_names_that_do_not_match_the_count_are_an_error(
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    http, _ = listeners
    env = {"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http:control"}
    child = activate([http], env)
    stdout, _ = child.communicate(timeout=10)
    assert "LISTEN_FDNAMES" in json.loads(stdout)["error"]


def test_a_file_that_is_no_socket_is_an_error(tmp_path: Path) -> None:
    with (tmp_path / "file").open("w") as file:
        env = {"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
        child = activate([file], env)
        stdout, _ = child.communicate(timeout=10)
    assert "not a usable socket" in json.loads(stdout)["error"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:control"},  # no LISTEN_PID
        {"LISTEN_PID": "other", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:control"},
        {"LISTEN_PID": "self", "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""},
    ],
)
def test_not_socket_activated(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        pid = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
        monkeypatch.setenv(name, pid.get(value, value) if name == "LISTEN_PID" else value)
    assert listen_fds() == {}
    # Unset in every case: they were meant for us, or for nobody below us.
    assert not any(name.startswith("LISTEN_") for name in os.environ)


def test_malformed_variables_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "two")
    with pytest.raises(systemd.SocketActivationError, match="LISTEN_FDS='two'"):
        listen_fds()
