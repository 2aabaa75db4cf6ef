"""What every mirror target is: the operations the sync engine needs, and their one error."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Target(Protocol):
    name: str
    kind: str  # directory, s3
    location: str  # the path, or s3://bucket/prefix at the endpoint
    requests: int  # operations done (for the benchmark and `mirrors sync`)

    def prepare(self) -> None:
        """Before a full comparison: MirrorRefused when the target is not one the daemon may
        write (a directory that holds something and no marker of the daemon's)."""

    def listing(self, prefix: str) -> dict[str, int]:
        """key -> size of everything held under `prefix` (a complete key or "")."""

    def put_file(self, key: str, source: Path, size: int, content_type: str) -> bool:
        """Write a file once; False when `key` is held already (a published file never changes)."""

    def put_page(self, key: str, body: bytes, gzipped: bytes | None, content_type: str) -> None:
        """Write or replace a page, atomically for a reader."""

    def delete(self, keys: list[str]) -> None: ...

    def read(self, key: str) -> bytes | None:
        """The bytes under `key`, None when nothing is there."""

    def fetch(self, key: str, dest: Path) -> None:
        """Copy what is under `key` into the file `dest` (for restoring)."""

    def digest(self, key: str) -> tuple[int, str] | None:
        """The size and sha256 of what is under `key` (read whole), None when nothing is."""

    def close(self) -> None: ...
