"""The daemon's own log file, for `insidersctl logs` when no journal keeps its output.

Under systemd the journal has every line (with priorities), so no file is written there. Run by
hand, stderr goes to a terminal and is gone once read: the same lines also go to
DATA_DIR/insidersd.log, rotated at 5 MiB with three old files kept. Every one of them is 0600,
the new file after a rotation too: the log names tokens and projects.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from insidersctl.logs import LOG_FILE

__all__ = ["LOG_FILE", "log_to_file"]

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 whatever the umask.

    The standard handler opens the new file after a rotation with open(), so with the usual
    umask 022 the fresh insidersd.log was 0644 while the rotated one stayed 0600.
    """

    # typeshed says TextIOWrapper; open() with the handler's mode (a str) is typed IO[Any].
    def _open(self) -> IO[str]:  # type: ignore[override]
        def private(name: str, flags: int) -> int:
            return os.open(name, flags | os.O_CLOEXEC, 0o600)

        return open(  # the handler keeps it open and closes it itself
            self.baseFilename, self.mode, encoding=self.encoding, opener=private
        )


@contextmanager
def log_to_file(path: Path, max_bytes: int = MAX_BYTES) -> Iterator[Path]:
    """Copy every log record to `path` (created 0600) while the context lasts.

    Nested uses for the same file share the outer handler: insidersd's main() holds the file for
    the whole run (so a failure to start is in it too), and the control server asks for it again.
    """
    root = logging.getLogger()
    if any(
        isinstance(h, logging.FileHandler) and h.baseFilename == str(path.absolute())
        for h in root.handlers
    ):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = PrivateRotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
