"""Secrets the daemon reads (a GitHub token, a webhook secret, a target's password, S3 keys).

systemd's credentials directory ($CREDENTIALS_DIRECTORY, LoadCredential=) comes first, then the
file the configuration names; a secret is never a configuration value itself, so it never shows
in a config dump or a log line. Blocking (a file read): call from a thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def read_secret(name: str, file_setting: str | None, credentials: Path | None) -> str | None:
    """A secret from systemd's credentials directory, else from the file the config names."""
    candidates = []
    if credentials is not None:
        candidates.append(credentials / name)
    if file_setting:
        candidates.append(Path(file_setting).expanduser())
    for path in candidates:
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            continue
        except OSError as error:
            log.error("cannot read the secret %s from %s: %s", name, path, error.strerror)
    return None
