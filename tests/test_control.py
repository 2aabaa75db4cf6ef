"""The control server in this process, on real Unix sockets: handshake, limits, access, lifecycle.

Clients are raw sockets (to misbehave on purpose), the real insidersctl code run in a thread, and
real processes of other uids (the kernel's SO_PEERCRED / SO_PEERGROUPS are checked for real).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from insiders.config import Directories, Settings
from insiders.control.access import peer_of, system_mode
from insiders.control.commands import Commands, Parts, log_location
from insiders.control.server import Limits, serve_control
from insiders.control.socket import LOCK_NAME
from insiders.control.wire import outcome_wire, watcher_info_wire
from insiders.errors import AlreadyRunning, ControlSocketError, RepoError
from insiders.index.upstream import Upstream
from insiders.logfile import LOG_FILE, log_to_file
from insiders.mirror.sync import Mirrors
from insiders.repos.registry import Repo, Repos
from insiders.store import Store
from insiders.structs import copied
from insiders.systemd import own_unit
from insiders.tokens import Tokens
from insiders.watcher.report import Outcome, Step, VersionFailure, WatcherState
from insiders.watcher.watcher import Watcher
from insidersctl import cli
from insidersctl import protocol as p
from insidersctl.client import Connection, ConnectionFailed, Refused
from insidersctl.logs import Reading, journalctl_command, last_lines
from insidersctl.paths import SOCKET_NAME
from tests.control_fixtures import RawClient, frame, short_tmp

OTHER_UID = 4242
OTHER_GID = 4343  # the "insiders" group of the system-mode tests
STRANGER_UID = 4244


@dataclass
class DaemonFacts:
    """What the control plane reads of the running daemon (app.Daemon's part of it)."""

    upstream: Upstream
    settings: Settings = dataclasses.field(default_factory=Settings)
    started: float = 0.0
    http_urls: list[str] = dataclasses.field(default_factory=list)
    restart_needed: tuple[str, ...] = ()
    certificate_error: str | None = None

    async def reload_now(self) -> str | None:
        return None


def make_commands(root: Path, *, log_file: bool) -> Commands:
    """The handlers on a real store, token file, registry, watcher (not running) and mirrors."""
    dirs = Directories(
        data=root / "data", cache=root / "cache", runtime=root / "run", credentials=None
    )
    dirs.data.mkdir(parents=True, exist_ok=True)
    store = Store.open(dirs.data)
    repos = Repos.open(dirs.data)
    settings = Settings()
    watcher = Watcher(
        repos=repos,
        store=store,
        settings=settings,
        cache_dir=dirs.cache,
        logs_dir=dirs.data / "logs",
        credentials=None,
        index_access=lambda borrower: contextlib.nullcontext(None),
    )
    parts = Parts(
        daemon=DaemonFacts(Upstream(None, "none", ttl=60, timeout=5, cache_dir=dirs.cache)),
        store=store,
        tokens=Tokens.open(dirs.data),
        repos=repos,
        watcher=watcher,
        mirrors=Mirrors(settings.mirrors, store, None),
        data_dir=dirs.data,
        socket_path=dirs.runtime / SOCKET_NAME,
        logs=log_location(dirs.data / LOG_FILE if log_file else None, builds=dirs.data / "logs"),
    )
    return Commands(parts)


@dataclass
class Running:
    commands: Commands
    path: Path
    root: Path

    def connect(self) -> RawClient:
        return RawClient(self.path)

    async def ctl(self, *args: str) -> int:
        """The real insidersctl code (blocking) in a thread."""
        argv = ["--socket", str(self.path), *args]
        return await trio.to_thread.run_sync(cli.main, argv)

    async def call(self, request: p.Request) -> p.Reply:
        def go() -> p.Reply:
            with Connection.open(self.path) as connection:
                return connection.call(request)

        return await trio.to_thread.run_sync(go)


@asynccontextmanager
async def running(root: Path, **options: Any) -> AsyncIterator[Running]:
    commands = make_commands(root, log_file=options.pop("log_file", False))
    path = commands.socket_path
    try:
        with ExitStack() as stack:
            if commands.logs.path:
                stack.enter_context(log_to_file(Path(commands.logs.path)))
            async with trio.open_nursery() as nursery:
                path = await nursery.start(
                    partial(serve_control, commands.handle, path=path, **options)
                )
                yield Running(commands, path, root)
                nursery.cancel_scope.cancel()
    finally:
        await commands.daemon.upstream.aclose()


async def start_fails(root: Path, **options: Any) -> BaseException:
    """The one exception that kept serve_control from starting (out of the nursery's group)."""
    try:
        async with running(root, **options):
            pass
    except BaseExceptionGroup as group:
        leaves = []
        pending: list[BaseException] = [group]
        while pending:
            error = pending.pop()
            if isinstance(error, BaseExceptionGroup):
                pending.extend(error.exceptions)
            else:
                leaves.append(error)
        [leaf] = leaves
        return leaf
    raise AssertionError("serve_control started")


@pytest.fixture
async def control() -> AsyncIterator[Running]:
    with short_tmp() as root:
        async with running(root, limits=Limits(handshake=1, idle=2, send=2)) as server:
            yield server


def raw(server: Running, script: Callable[[RawClient], Any]) -> Any:
    def go() -> Any:
        with server.connect() as client:
            return script(client)

    return trio.to_thread.run_sync(go)


# -- the conversation ----------------------------------------------------------------------------


async def test_hello_then_any_number_of_requests(control: Running) -> None:
    def script(c: RawClient) -> list[p.ServerMessage]:
        welcome = c.hello()
        replies = [welcome]
        for request in (p.Status(), p.ListRepos(), p.ListTokens()):
            c.send_message(request)
            replies.append(c.receive())
        return replies

    welcome, status, repos, tokens = await raw(control, script)
    assert welcome == p.Welcome(daemon=welcome.daemon, pid=os.getpid())
    assert isinstance(status, p.StatusReport)
    assert status.socket == str(control.path)
    assert isinstance(repos, p.RepoList)
    assert isinstance(tokens, p.TokenList)
    assert [t.name for t in tokens.tokens] == ["default"]


async def test_unknown_and_malformed_requests_get_errors_and_the_connection_goes_on(
    control: Running,
) -> None:
    def script(c: RawClient) -> list[p.ServerMessage]:
        c.hello()
        replies = []
        for body in (
            msgspec.msgpack.encode({"type": "from-the-future", "x": 1}),
            b"\xc1garbage",
            b"",
            msgspec.msgpack.encode({"type": "yank"}),
            msgspec.msgpack.encode(p.Hello()),
            msgspec.msgpack.encode(p.ServerStatus()),
        ):
            c.send(frame(body))
            replies.append(c.receive())
        return replies

    *errors, last = await raw(control, script)
    assert [(e.code, e.message.split(":")[0]) for e in errors] == [
        (
            p.UNKNOWN_REQUEST,
            "this insidersd (0.1.0) does not know the request 'from-the-future'; "
            "is insidersctl newer than the daemon?",
        ),
        (p.BAD_REQUEST, "not a msgpack message"),
        (p.BAD_REQUEST, "not a msgpack message"),
        (p.BAD_REQUEST, "invalid message"),
        (p.BAD_REQUEST, "hello was said already"),
    ]
    assert isinstance(last, p.ServerReport)


@pytest.mark.parametrize(
    ("first", "code", "text"),
    [
        (
            p.encode_frame(p.Status()),
            p.BAD_REQUEST,
            "a connection opens with hello: it began with Status",
        ),
        (frame(b"\xc1"), p.BAD_REQUEST, "a connection opens with hello: not a msgpack message"),
        (
            p.encode_frame(p.Hello(protocol=2, client="9.0")),
            p.INCOMPATIBLE,
            "insidersctl 9.0 speaks control protocol 2, this insidersd",
        ),
        (
            struct.pack(">I", p.MAX_REQUEST_SIZE + 1),
            p.TOO_LARGE,
            f"a frame of {p.MAX_REQUEST_SIZE + 1} bytes exceeds",
        ),
    ],
)
async def test_a_bad_opening_gets_one_error_then_the_connection_closes(
    control: Running, first: bytes, code: str, text: str
) -> None:
    def script(c: RawClient) -> list[p.ServerMessage]:
        c.send(first)
        return c.drain()

    [error] = await raw(control, script)
    assert isinstance(error, p.Error)
    assert error.code == code
    assert text in error.message


async def test_an_oversized_request_is_refused_and_the_connection_closed(control: Running) -> None:
    def script(c: RawClient) -> list[p.ServerMessage]:
        c.hello()
        c.send(struct.pack(">I", 1 << 30))
        return c.drain()

    [error] = await raw(control, script)
    assert error.code == p.TOO_LARGE


@pytest.mark.parametrize(
    ("greet", "send", "message"),
    [
        (False, b"", "no greeting within 1 s"),
        (False, struct.pack(">I", 50) + b"only part of it", "no greeting within 1 s"),
        (True, b"", "no request for 2 s: closing"),
        (True, struct.pack(">I", 50), "no request for 2 s: closing"),
    ],
)
async def test_a_stalled_client_is_timed_out(
    control: Running, greet: bool, send: bytes, message: str
) -> None:
    def script(c: RawClient) -> list[p.ServerMessage]:
        if greet:
            c.hello()
        c.send(send)
        return c.drain()

    with trio.fail_after(5):
        [error] = await raw(control, script)
    assert (error.code, error.message) == (p.TIMEOUT, message)


async def test_a_client_that_leaves_mid_frame_harms_nothing(control: Running) -> None:
    def script(c: RawClient) -> None:
        c.hello()
        c.send(p.encode_frame(p.Status())[:-1])

    for _ in range(20):
        await raw(control, script)
    assert isinstance(await control.call(p.Status()), p.StatusReport)


async def test_more_clients_than_slots_wait_then_hear_busy() -> None:
    with short_tmp() as root:
        limits = Limits(handshake=0.5, idle=5, connections=1)
        async with running(root, limits=limits) as server:
            with server.connect() as holder:
                await trio.to_thread.run_sync(holder.hello)
                # Half a request: the holder is busy sending, not idle, so it keeps its slot.
                await trio.to_thread.run_sync(holder.send, p.encode_frame(p.Status())[:-1])

                def second(c: RawClient) -> list[p.ServerMessage]:
                    c.send_message(p.Hello())
                    return c.drain()

                [error] = await raw(server, second)
                assert error.code == p.BUSY
            # The slot is free again once the first client leaves.
            with trio.fail_after(5):
                assert isinstance(await server.call(p.Status()), p.StatusReport)


async def test_many_concurrent_clients_all_get_answers(control: Running) -> None:
    """Good clients, junk senders and stallers at once; every good request is answered."""
    answered = 0

    async def good() -> None:
        nonlocal answered
        stream = await trio.open_unix_socket(str(control.path))
        async with stream:
            reader = p.FrameReader()

            async def receive() -> p.ServerMessage:
                while (body := reader.next_frame()) is None:
                    data = await stream.receive_some(65536)
                    assert data
                    reader.feed(data)
                return p.decode_server_message(body)

            await stream.send_all(p.encode_frame(p.Hello()))
            assert isinstance(await receive(), p.Welcome)
            for _ in range(10):
                await stream.send_all(p.encode_frame(p.Status()))
                assert isinstance(await receive(), p.StatusReport)
                answered += 1

    async def junk(seed: int) -> None:
        stream = await trio.open_unix_socket(str(control.path))
        async with stream:
            await stream.send_all(os.urandom(64 + seed))

    async def staller() -> None:
        stream = await trio.open_unix_socket(str(control.path))
        async with stream:
            await trio.sleep(0.5)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(good)
                if i % 2:
                    nursery.start_soon(junk, i)
                if i % 4 == 0:
                    nursery.start_soon(staller)
    assert answered == 400


# -- the commands, through the real client code ---------------------------------------------------


class FakeWatcher:
    """Stands in for the watcher: the contract of insiders.control.commands.Watcher, nothing more;
    it speaks the watcher's own types, which insiders.control.commands words for insidersctl."""

    def __init__(self, *, fail: bool = False) -> None:
        self.paused = False
        self.fail = fail
        self.scheduled: list[tuple[list[str], bool]] = []

    def info(self) -> WatcherState:
        state = "paused" if self.paused else "running"
        return WatcherState(
            state=state, interval=600, next_check=None, checking=(), sandbox="bubblewrap"
        )

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def schedule(self, repos: Sequence[Repo], *, force: bool, versions: Sequence[str] = ()) -> None:
        self.scheduled.append(([r.dist for r in repos], force))

    async def check(
        self, repos: Sequence[Repo], *, force: bool, progress: Callable[[Step], None]
    ) -> list[Outcome]:
        if self.fail:
            raise RuntimeError("a bug in the watcher")
        outcomes = []
        for repo in repos:
            for stage in ("listing", "fetching", "building", "publishing"):
                progress(Step(repo=repo.dist, stage=stage, version="1.0"))
                await trio.sleep(0.01)
            if repo.dist == "broken":
                progress(Step(repo=repo.dist, stage="failed", message="exit 1", log="/l/b.log"))
                outcomes.append(
                    Outcome(repo=repo.dist, outcome="failed", error="exit 1", log="/l/b.log")
                )
            else:
                progress(Step(repo=repo.dist, stage="done", version="1.0"))
                outcomes.append(Outcome(repo=repo.dist, outcome="published", versions=("1.0",)))
        return outcomes


def test_the_watcher_s_reports_in_the_protocol_s_words() -> None:
    failure = VersionFailure(version="2.0", error="exit 1", log="/l/2.0.log", attempts=3)
    outcome = Outcome(
        repo="r", outcome="failed", versions=("1.0",), error="2.0: exit 1", failures=(failure,)
    )
    assert outcome_wire(outcome) == p.RepoOutcome(
        repo="r",
        outcome="failed",
        versions=("1.0",),
        error="2.0: exit 1",
        failures=(p.VersionFailure(version="2.0", error="exit 1", log="/l/2.0.log", attempts=3),),
    )
    state = WatcherState(
        state="paused", interval=60.0, next_check=None, checking=("r",), sandbox="bubblewrap"
    )
    assert watcher_info_wire(state) == p.WatcherInfo(
        available=True, state="paused", interval=60.0, checking=("r",), sandbox="bubblewrap"
    )


async def test_update_streams_progress_then_the_report(
    control: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    control.commands.watcher = FakeWatcher()  # type: ignore[assignment]
    assert await control.ctl("repos", "add", "o/good:good") == 0
    assert await control.ctl("repos", "add", "o/broken:broken") == 0
    capsys.readouterr()

    assert await control.ctl("update", "good") == 0
    assert capsys.readouterr().out.splitlines() == [
        "good: listing 1.0",
        "good: fetching 1.0",
        "good: building 1.0",
        "good: publishing 1.0",
        "good: published 1.0",  # the result, said once (not also as a step)
    ]
    assert await control.ctl("update", "--json") == 1  # one of them failed
    lines = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["type"], x.get("repo"), x.get("stage")) for x in lines[:6]] == [
        ("progress", "broken", stage)
        for stage in ("listing", "fetching", "building", "publishing", "failed")
    ] + [("progress", "good", "listing")]
    assert lines[-1]["type"] == "update"
    assert [(r["repo"], r["outcome"], r["log"]) for r in lines[-1]["results"]] == [
        ("broken", "failed", "/l/b.log"),
        ("good", "published", None),
    ]


async def test_update_without_waiting_and_the_watcher_switch(
    control: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    watcher = FakeWatcher()
    control.commands.watcher = watcher  # type: ignore[assignment]
    assert await control.ctl("repos", "add", "o/r:dist") == 0
    assert watcher.scheduled == [(["dist"], False)]  # an added repository is checked at once
    assert await control.ctl("update", "--no-wait", "--force") == 0
    assert watcher.scheduled == [(["dist"], False), (["dist"], True)]
    assert await control.ctl("watcher", "stop") == 0
    assert watcher.paused
    assert await control.ctl("watcher", "start") == 0
    assert not watcher.paused
    assert "watcher: running, checks every 10 min" in capsys.readouterr().out


async def test_a_bug_in_a_handler_is_an_internal_error_not_a_crash(
    control: Running, caplog: pytest.LogCaptureFixture
) -> None:
    control.commands.watcher = FakeWatcher(fail=True)  # type: ignore[assignment]
    await control.call(p.AddRepo(spec="o/r:dist"))

    def script(c: RawClient) -> list[p.ServerMessage]:
        c.hello()
        c.send_message(p.Update())
        failed = c.receive()
        c.send_message(p.Status())
        return [failed, c.receive()]

    failed, status = await raw(control, script)
    assert failed.code == p.INTERNAL
    assert "this is a bug" in failed.message
    assert isinstance(status, p.StatusReport)
    assert "RuntimeError: a bug in the watcher" in caplog.text


class RefusingWatcher(FakeWatcher):
    async def check(self, repos: Sequence[Repo], **_: Any) -> list[p.RepoOutcome]:
        raise RepoError("no repository named dist is watched (it was removed meanwhile)")


async def test_a_refusal_inside_a_running_update_is_a_refusal(control: Running) -> None:
    """The check runs in a nursery, which wraps what it raises in an exception group: the
    refusal still reaches the client as itself, not as "this is a bug"."""
    control.commands.watcher = RefusingWatcher()  # type: ignore[assignment]
    await control.call(p.AddRepo(spec="o/r:dist"))

    def script(c: RawClient) -> p.ServerMessage:
        c.hello()
        c.send_message(p.Update())
        return c.receive()

    assert await raw(control, script) == p.Error(
        code=p.REFUSED, message="no repository named dist is watched (it was removed meanwhile)"
    )


async def test_tokens_and_repos_through_the_client(
    control: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await control.ctl("tokens", "create", "ci", "--scope", "read") == 0
    captured = capsys.readouterr()
    secret = captured.out.strip()
    assert secret.startswith("insiders-")
    assert "shown only this once" in captured.err
    assert control.commands.tokens.check(secret, "read") is not None
    assert await control.ctl("tokens", "create", "ci") == 1
    assert "a token named 'ci' exists already" in capsys.readouterr().err
    assert await control.ctl("tokens", "create", "bad name") == 1
    assert await control.ctl("tokens", "revoke", "ci") == 0
    assert control.commands.tokens.check(secret, "read") is None
    assert await control.ctl("tokens", "revoke", "ci") == 1
    assert "no token named 'ci'" in capsys.readouterr().err


# -- access ----------------------------------------------------------------------------------------


def test_system_mode_is_a_system_services_runtime_directory() -> None:
    assert system_mode({"RUNTIME_DIRECTORY": "/run/insiders"})
    assert not system_mode(
        {"RUNTIME_DIRECTORY": "/run/user/1000/x", "XDG_RUNTIME_DIR": "/run/user/1000"}
    )
    assert not system_mode({"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert not system_mode({})


async def test_the_socket_is_private_in_user_mode(control: Running) -> None:
    assert control.path.stat().st_mode & 0o777 == 0o600
    assert control.path.parent.stat().st_mode & 0o777 == 0o700
    with control.connect() as client:
        me = peer_of(client.sock)
    assert (me.uid, me.gid) == (os.getuid(), os.getgid())


def _run_as(uid: int, gid: int, groups: Sequence[int], argv: list[str]) -> tuple[int, str]:
    """insidersctl's code in a forked process that has become another user.

    Forked rather than executed: this machine's Python lives under /root, which other users cannot
    enter. The child takes fresh stdout/stderr objects on a pipe (no lock inherited from a thread).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 70
        try:
            os.close(read_end)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            sys.stdout = sys.stderr = open(write_end, "w", closefd=False)  # noqa: SIM115
            status = cli.main(argv)
            sys.stdout.flush()
        finally:
            os._exit(status)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        output = pipe.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), output


async def as_user(
    server: Running, uid: int, gid: int, groups: Sequence[int] = ()
) -> tuple[int, str]:
    """`insidersctl status` in a process of another uid."""
    argv = ["--socket", str(server.path), "status"]
    return await trio.to_thread.run_sync(_run_as, uid, gid, groups, argv)


async def test_another_user_is_refused_by_the_kernel_then_by_the_daemon(control: Running) -> None:
    control.root.chmod(0o755)
    status, output = await as_user(control, OTHER_UID, OTHER_UID)
    assert status == 3
    assert "no permission to use insidersd's control socket" in output
    # A wrong mode (a hand-made socket unit, say) lets the kernel through: the daemon still refuses.
    control.path.parent.chmod(0o755)
    control.path.chmod(0o666)
    status, output = await as_user(control, OTHER_UID, OTHER_UID)
    assert status == 1, output
    assert output.strip() == (
        f"insidersctl: uid {OTHER_UID} may not use this insidersd: only its own user "
        f"(uid {os.getuid()}) and root may"
    )
    assert "Traceback" not in output


async def test_system_mode_lets_the_group_in_and_no_one_else() -> None:
    with short_tmp() as root:
        runtime = root / "run"
        runtime.mkdir(mode=0o750)
        os.chown(runtime, 0, OTHER_GID)  # what RuntimeDirectory= makes for User=/Group=
        async with running(root, system=True, group=OTHER_GID) as server:
            st = server.path.stat()
            assert (st.st_mode & 0o777, st.st_gid) == (0o660, OTHER_GID)
            # A member through a supplementary group, and through the primary group.
            assert (await as_user(server, OTHER_UID, OTHER_UID, [OTHER_GID]))[0] == 0
            assert (await as_user(server, OTHER_UID, OTHER_GID))[0] == 0
            status, output = await as_user(server, STRANGER_UID, STRANGER_UID)
            assert status == 3
            assert "no permission" in output
            runtime.chmod(0o755)
            server.path.chmod(0o666)
            status, output = await as_user(server, STRANGER_UID, STRANGER_UID)
            assert status == 1
            assert (
                f"only root, its user (uid 0) and members of the group gid {OTHER_GID} may"
                in output
            )


# -- the socket's life ---------------------------------------------------------------------------


async def test_a_second_server_refuses_with_the_first_ones_pid(control: Running) -> None:
    error = await start_fails(control.root)
    assert isinstance(error, AlreadyRunning)
    assert error.pid == os.getpid()
    assert str(error) == (
        f"insidersd is already running, pid {os.getpid()} (control socket {control.path})"
    )
    assert isinstance(error, OSError)  # insidersd reports it as "cannot start: ..."
    assert isinstance(await control.call(p.Status()), p.StatusReport)  # the first one is untouched


async def test_a_live_daemon_on_the_socket_is_noticed_even_without_the_lock(
    control: Running,
) -> None:
    (control.path.parent / LOCK_NAME).rename(control.path.parent / "moved.lock")  # an older daemon
    error = await start_fails(control.root)
    assert isinstance(error, AlreadyRunning)
    assert error.pid == os.getpid()


async def test_a_stale_socket_is_replaced_and_the_socket_removed_at_exit() -> None:
    with short_tmp() as root:
        path = root / "run" / "control.sock"
        path.parent.mkdir(mode=0o700)
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(path))
        dead.close()  # the file stays, nothing listens: what a killed daemon leaves
        async with running(root) as server:
            assert server.path == path
            assert isinstance(await server.call(p.Status()), p.StatusReport)
        assert not path.exists()


async def test_refusals_to_set_the_socket_up() -> None:
    with short_tmp() as root:
        (root / "run").mkdir()
        (root / "run" / "control.sock").write_text("not a socket")
        error = await start_fails(root)
        assert isinstance(error, ControlSocketError)
        assert str(error).endswith("control.sock exists and is not a socket: move it away")
    with short_tmp() as root:
        (root / "run").mkdir()
        os.chown(root / "run", OTHER_UID, OTHER_UID)
        error = await start_fails(root)
        assert isinstance(error, ControlSocketError)
        assert f"belongs to uid {OTHER_UID}, not to this user" in str(error)


async def test_a_socket_handed_over_is_served_as_it_is() -> None:
    """Socket activation: systemd made the socket, with its mode; it is used, not re-bound."""
    with short_tmp() as root:
        path = root / "activated.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        path.chmod(0o660)
        sock.listen()
        async with running(root, sock=sock) as server:
            assert server.path == path
            assert isinstance(await server.call(p.Status()), p.StatusReport)
            assert path.stat().st_mode & 0o777 == 0o660
            assert not (root / "run").exists()


async def test_a_handed_over_socket_must_be_a_unix_one() -> None:
    with short_tmp() as root, socket.socket(socket.AF_INET) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        error = await start_fails(root, sock=tcp)
        assert isinstance(error, ControlSocketError)
        assert "is not a Unix socket" in str(error)


async def test_a_long_socket_path_works() -> None:
    with short_tmp() as root:
        deep = root / ("d" * 60) / ("e" * 60)
        async with running(deep) as server:
            assert len(str(server.path)) > 108
            assert isinstance(await server.call(p.Status()), p.StatusReport)


# -- logs ------------------------------------------------------------------------------------------


async def test_the_daemon_writes_a_log_file_and_says_where(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with short_tmp() as root:
        async with running(root, log_file=True) as server:
            where = await server.call(p.Logs())
            assert where == p.LogsLocation(
                path=str(root / "data" / "insidersd.log"), builds=str(root / "data" / "logs")
            )
            assert await server.ctl("tokens", "create", "logged") == 0
            assert await server.ctl("logs", "-n", "1") == 0
            last = capsys.readouterr().out.splitlines()[-1]
            assert last.endswith("insiders.control.commands: token logged created (upload)")
        assert (root / "data" / "insidersd.log").stat().st_mode & 0o777 == 0o600


def test_a_rotated_log_file_is_private_too(tmp_path: Path) -> None:
    """After a rotation the new insidersd.log is 0600 like the old ones, whatever the umask."""
    path = tmp_path / "insidersd.log"
    old_umask = os.umask(0o022)
    try:
        with log_to_file(path, max_bytes=2000):
            for n in range(100):
                logging.getLogger("insiders.test").warning("line %d of a log that rotates", n)
    finally:
        os.umask(old_umask)
    files = sorted(tmp_path.glob("insidersd.log*"))
    assert len(files) == 4  # the current file and three rotated ones
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}


def test_the_unit_is_found_in_the_cgroup(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/insiders.service\n"
    )
    assert own_unit(str(cgroup)) == ("insiders.service", True)
    cgroup.write_text("0::/system.slice/insiders.service\n")
    assert own_unit(str(cgroup)) == ("insiders.service", False)
    cgroup.write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert own_unit(str(cgroup)) == (None, False)


def test_journalctl_is_asked_for_the_unit() -> None:
    user = p.LogsLocation(journal=True, unit="insiders.service", user=True)
    assert journalctl_command(user, Reading(lines=5, follow=True)) == [
        "journalctl",
        "--no-pager",
        "--lines",
        "5",
        "--follow",
        "--user-unit",
        "insiders.service",
    ]
    system = p.LogsLocation(journal=True, unit="insiders.service")
    assert journalctl_command(system, Reading(lines=1, follow=False))[-2:] == [
        "--unit",
        "insiders.service",
    ]
    bare = p.LogsLocation(journal=True, invocation="abc")
    assert (
        journalctl_command(bare, Reading(lines=1, follow=False))[-1] == "_SYSTEMD_INVOCATION_ID=abc"
    )


@pytest.mark.parametrize("count", [0, 1, 3, 10])
def test_last_lines(tmp_path: Path, count: int) -> None:
    log = tmp_path / "log"
    lines = [f"line {i}\n".encode() for i in range(5000)]
    log.write_bytes(b"".join(lines))
    with log.open("rb") as file:
        assert last_lines(file, count, block=100) == b"".join(
            lines[len(lines) - count :] if count else []
        )


# -- the client against a daemon of another protocol -------------------------------------------


def test_the_client_refuses_a_daemon_of_another_major_version() -> None:
    with short_tmp() as root:
        path = root / "s"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen()

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(p.encode_frame(p.Welcome(protocol=2, daemon="2.0", pid=1)))

        thread = threading.Thread(target=serve)
        thread.start()
        with pytest.raises(ConnectionFailed, match=r"insidersd 2\.0 speaks control protocol 2"):
            Connection.open(path)
        thread.join()
        listener.close()


def test_refused_keeps_the_code() -> None:
    error = Refused(p.Error(code=p.NOT_FOUND, message="x"))
    assert (error.error.code, str(error)) == (p.NOT_FOUND, "x")


def test_a_reply_never_leaves_a_renamed_field_at_its_default() -> None:
    """The converters copy by name and refuse a field the daemon's type lacks: a rename on either
    side fails here, instead of sending `mirror.lag = 0.0` forever."""

    @dataclass
    class Renamed:  # a MirrorState whose `lag` became `delay`
        name: str = "web"
        kind: str = "directory"
        location: str = "/srv"
        state: str = "idle"
        delay: float = 3.0
        pending: int = 0
        full_sync_pending: bool = False
        last_sync: float | None = None
        last_error: str | None = None
        last_error_at: float | None = None
        next_retry: float | None = None
        requests: int = 0
        withheld: int = 0

    with pytest.raises(TypeError, match="Renamed has no lag for MirrorInfo"):
        copied(p.MirrorInfo, Renamed())
    assert copied(p.MirrorInfo, Renamed(), lag=3.0).lag == 3.0
