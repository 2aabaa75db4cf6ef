"""The HTTP accept loop: hypercorn's protocol on connections that are counted, bounded and shed.

`hypercorn.trio.serve` hands every accepted socket to hypercorn's `TCPServer` with no bound and no
guard, and that let anonymous clients stop the index, then crash it:

- clients that connect and stay (a trickled body, headers that never end, a response never read)
  fill the descriptor table; `accept` then fails with EMFILE and `GET /simple/` waits for everyone;
- `TCPServer._close` sends EOF without its send lock and without a shield: cancelled in its
  checkpoint (the app's nursery ends once the response is out), the connection is never closed,
  the client's next request hangs and the descriptor stays taken; racing a `send_all`, it raises
  `trio.BusyResourceError`, which no one catches, so it ended `serve` and the daemon.

So this module keeps hypercorn's protocol code (`TCPServer` drives h11/h2) and owns only what is
around it:

- a bound on open connections derived from the descriptor limit (`connection_limit`), with room
  left for the store's files, git, builds, the upstream client and the control socket; at the
  bound, the connection that moved the fewest bytes per second (and is older than a second) is
  closed to make room, so a crowd of slow clients cannot lock out the ones that ask and go;
- an accept loop that waits and retries on EMFILE/ENFILE/ENOBUFS/ENOMEM instead of failing;
- a stream per connection that serialises `send_eof` with `send_all`, finishes closing even when
  cancelled, and gives up on a client that stops reading our response;
- a connection that fails anyway is logged and closed: the index goes on serving the others.
"""

from __future__ import annotations

import errno
import logging
import resource
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

log = logging.getLogger(__name__)

# Errors of accept(2) that mean "no room right now": wait and try again (as trio.serve_listeners).
_ACCEPT_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY = 0.1
_CAPACITY_WARN_EVERY = 60.0
# The most connections served at once, whatever the descriptor limit: each costs memory.
MAX_CONNECTIONS = 4096
# Descriptors kept for everything but HTTP connections: at least this many, or a quarter.
MIN_HEADROOM = 64
# A descriptor limit worth asking for when the soft limit is lower and the hard one allows it.
WANTED_DESCRIPTORS = 16384
# A connection this young is never shed: it has not had the time to send its request.
SHED_MIN_AGE = 1.0
# A client that takes longer than this plus one second per 500 bytes to take our response is gone.
SEND_STALL = 60.0
SEND_MIN_RATE = 500.0


def raise_descriptor_limit(wanted: int = WANTED_DESCRIPTORS) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one; returns the soft limit in force.

    The soft limit is 1024 by default for the sake of select(2); trio and its neighbours use
    epoll and poll, so more is safe. Under a sandbox that forbids setrlimit (the system unit's
    `SystemCallFilter=~@resources`) the unit's `LimitNOFILE=` has set it already.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as error:
            log.debug("descriptor limit stays at %d: %s", soft, error)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limit(descriptors: int, configured: int = 0) -> int:
    """How many HTTP connections to serve at once with `descriptors` file descriptors.

    A connection can hold two (its socket, the file it streams); the rest of the daemon keeps a
    quarter of the table (at least MIN_HEADROOM). A configured bound above that is lowered.
    """
    headroom = max(MIN_HEADROOM, descriptors // 4)
    derived = max(8, (descriptors - headroom) // 2)
    if configured:
        if configured > derived:
            log.warning(
                "server.max-connections = %d needs more descriptors than the limit of %d: "
                "serving at most %d connections (raise LimitNOFILE=)",
                configured,
                descriptors,
                derived,
            )
        return min(configured, derived)
    return min(MAX_CONNECTIONS, derived)


class Connection(trio.abc.HalfCloseableStream):
    """A client's socket as hypercorn sees it, with what shedding needs to know about it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket  # hypercorn asks for the peer's address here
        self.accepted = trio.current_time()
        self.moved = 0  # bytes received and sent
        self.shed = False
        self._send_lock = trio.Lock()

    def rate(self, now: float) -> float:
        return self.moved / max(now - self.accepted, SHED_MIN_AGE)

    def close_now(self) -> None:
        """Close the socket at once: whoever waits on it gets ClosedResourceError."""
        self.shed = True
        self.socket.close()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        self.moved += len(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            with trio.move_on_after(SEND_STALL + len(data) / SEND_MIN_RATE) as stalled:
                await self.stream.send_all(data)
            if stalled.cancelled_caught:
                self.close_now()
                raise trio.BrokenResourceError("the client stopped reading the response")
        self.moved += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._send_lock.locked():
            return  # a send is under way; the close that follows ends the connection anyway
        # Shielded: hypercorn closes right after, and a cancelled EOF used to leave it open.
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                await self.stream.send_eof()

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


# The connection a request came on, for the tasks hypercorn runs the app in (they inherit it).
current_connection: ContextVar[Connection | None] = ContextVar("current_connection", default=None)


@dataclass(eq=False)
class _Server:
    """The accept loop and the open connections of one `serve_http`."""

    app: Any
    config: Config
    limit: int
    ssl_context: ssl.SSLContext | None
    context: WorkerContext = field(init=False, default_factory=lambda: WorkerContext(None))
    state: LifespanState = field(init=False, default_factory=dict)
    open: set[Connection] = field(init=False, default_factory=set)
    _freed: trio.Event = field(init=False, default_factory=trio.Event)
    _capacity_warned: float = field(init=False, default=-_CAPACITY_WARN_EVERY)

    async def accept_forever(
        self, listener: trio.SocketListener, nursery: trio.Nursery, secure: bool
    ) -> None:
        async with listener:
            while True:
                await self._wait_for_room()
                try:
                    stream = await listener.accept()
                except OSError as error:
                    if error.errno not in _ACCEPT_CAPACITY:
                        raise
                    self._warn_capacity(error)
                    await trio.sleep(_ACCEPT_RETRY)
                    continue
                connection = Connection(stream)
                self.open.add(connection)
                nursery.start_soon(self.serve_connection, connection, secure)
                if len(self.open) > self.limit:
                    self._shed_one()

    async def _wait_for_room(self) -> None:
        """Accept no more while over the bound; shed again as connections age."""
        while len(self.open) > self.limit:
            self._shed_one()
            self._freed = trio.Event()
            with trio.move_on_after(SHED_MIN_AGE / 2):
                await self._freed.wait()

    def _shed_one(self) -> None:
        now = trio.current_time()
        candidates = [c for c in self.open if not c.shed and now - c.accepted >= SHED_MIN_AGE]
        if not candidates:
            return
        victim = min(candidates, key=lambda c: c.rate(now))
        log.debug("at the bound of %d connections: closing the slowest one", self.limit)
        victim.close_now()

    def _warn_capacity(self, error: OSError) -> None:
        now = trio.current_time()
        if now - self._capacity_warned >= _CAPACITY_WARN_EVERY:
            self._capacity_warned = now
            log.warning(
                "accept failed: %s (%d connections open); retrying",
                error.strerror,
                len(self.open),
            )

    async def serve_connection(self, connection: Connection, secure: bool) -> None:
        stream: trio.abc.Stream = connection
        if secure and self.ssl_context is not None:
            stream = trio.SSLStream(
                connection, self.ssl_context, server_side=True, https_compatible=True
            )
        current_connection.set(connection)
        try:
            server = TCPServer(
                self.app,
                self.config,
                self.context,
                ConnectionState(self.state.copy()),
                stream,  # type: ignore[arg-type]  # hypercorn names SSLStream, uses Stream
            )
            await server.run()
        except Exception:
            # One connection's failure is logged and ends that connection, not the index.
            log.exception("an HTTP connection failed; closing it")
        finally:
            self.open.discard(connection)
            connection.socket.close()
            self._freed.set()


async def serve_http(
    app: Any,
    config: Config,
    *,
    limit: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` like `hypercorn.trio.serve` does, on the accept loop of this module."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    server = _Server(wrapped, config, limit, config.create_ssl_context())
    lifespan = Lifespan(wrapped, config, server.state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        sockets = config.create_sockets()
        listening = [(sock, True) for sock in sockets.secure_sockets] + [
            (sock, False) for sock in sockets.insecure_sockets
        ]
        binds = []
        for sock, secure in listening:
            sock.listen(config.backlog)
            scheme = "https" if secure else "http"
            binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                for sock, secure in listening:
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    accepting.start_soon(server.accept_forever, listener, connections, secure)
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            # Idle connections close now; requests in flight get the grace time.
            await server.context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
