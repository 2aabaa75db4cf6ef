"""The daemon's own log file, for `insidersctl logs` when no journal keeps its output.

Under systemd the journal has every line (with priorities), so no file is written there. Run by
hand, stderr goes to a terminal and is gone once read: the same lines also go to
DATA_DIR/insidersd.log, rotated at 5 MiB with three old files kept. Every one of them is 0600,
the new file after a rotation too: the log names tokens and projects.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from insiders.fsutil import is_disk_full
from insidersctl.logs import LOG_FILE

__all__ = ["LOG_FILE", "log_to_file"]

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 whatever the umask.

    The standard handler opens the new file after a rotation with open(), so with the usual
    umask 022 the fresh insidersd.log was 0644 while the rotated one stayed 0600.

    A full disk is said once on stderr (which has every line anyway), not with a traceback per
    record as logging.Handler.handleError does.
    """

    _disk_full = False
    _failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)
        if self._disk_full and not self._failed:
            self._disk_full = False
            sys.stderr.write(f"insidersd: writing {self.baseFilename} again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and is_disk_full(error):
            if not self._disk_full:
                self._disk_full = True
                sys.stderr.write(
                    f"insidersd: no space left for {self.baseFilename}; its lines go to stderr "
                    "only until there is\n"
                )
            return
        super().handleError(record)

    def _open(self) -> io.TextIOWrapper:
        def private(name: str, flags: int) -> int:
            return os.open(name, flags | os.O_CLOEXEC, 0o600)

        return open(  # the handler keeps it open and closes it itself
            self.baseFilename, "a", encoding=self.encoding, opener=private
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
