"""Where a mirror is written: the operations the sync engine needs, and the two kinds of target.

The operations are blocking (file system calls, boto3): the engine runs them in worker threads.
Every failure of the target itself (disk full, bucket unreachable, access denied) is raised as
`TargetError` at this boundary, so the engine retries with backoff instead of crashing.
"""

from __future__ import annotations

from pathlib import Path

from insiders.config import MirrorSettings
from insiders.errors import TargetError

from .base import Target

__all__ = ["Target", "TargetError", "open_target"]


def open_target(name: str, settings: MirrorSettings, credentials: Path | None) -> Target:
    """The target a [mirrors.NAME] section describes; TargetError when it cannot be used."""
    if settings.directory is not None:
        from .directory import DirectoryTarget

        return DirectoryTarget(name, Path(settings.directory).expanduser())
    from .s3 import S3Target

    return S3Target(name, settings, credentials)
