"""Uploading builds to other indexes through the legacy upload API, streamed from disk.

httpx sends the multipart body from an async generator, so a large wheel never sits in memory
and the event loop never waits on a blocking read. Network errors and 5xx answers are retried
with backoff; "already exists" counts as done.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from insiders.config import TargetSettings
from insiders.errors import PublishError
from insiders.ingest import hash_file
from insiders.names import parse_dist_filename
from insiders.watcher.git import redact

log = logging.getLogger(__name__)

CHUNK = 256 << 10
ATTEMPTS = 4


def _already_exists(response: httpx.Response) -> bool:
    # What twine's --skip-existing recognises: 409, or 400 with "already exist(s)".
    return response.status_code == 409 or (
        response.status_code == 400 and "already exist" in response.text.lower()
    )


async def upload(
    client: httpx.AsyncClient, target: TargetSettings, password: str | None, path: Path
) -> str:
    """Upload one file; "uploaded" or "exists", or PublishError with the index's answer.

    Network errors and 5xx answers are tried again (ATTEMPTS in all, with a doubling delay);
    any other refusal is final.
    """
    form = await _Form.of(path)
    auth: httpx.Auth | httpx.BasicAuth = (
        httpx.BasicAuth(target.username, password) if password is not None else httpx.Auth()
    )
    delay = 1.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.post(
                target.url, content=form.body(), headers=form.headers, auth=auth
            )
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code < 300:
                return "uploaded"
            if _already_exists(response):
                return "exists"
            problem = f"{response.status_code} {response.text.strip()[:300]}"
            if response.status_code < 500:
                raise PublishError(redact(f"{target.url} refused {path.name}: {problem}", password))
        if attempt < ATTEMPTS:
            log.warning(
                "upload of %s to %s failed (%s); retrying", path.name, redact(target.url), problem
            )
            await trio.sleep(delay)
            delay *= 2
    raise PublishError(
        redact(
            f"{target.url}: {path.name} not uploaded after {ATTEMPTS} tries: {problem}", password
        )
    )


@dataclass(frozen=True, slots=True)
class _Form:
    """The multipart form twine sends for one file: the fields, then the file streamed from disk
    (each attempt reads it again, so a retry sends the whole file)."""

    path: Path
    head: bytes
    tail: bytes
    headers: dict[str, str]

    @classmethod
    async def of(cls, path: Path) -> _Form:
        dist = parse_dist_filename(path.name)
        digests = await trio.to_thread.run_sync(hash_file, path)
        fields = {
            ":action": "file_upload",
            "protocol_version": "1",
            "name": str(dist.name),
            "version": str(dist.version),
            "filetype": "bdist_wheel" if dist.kind == "wheel" else "sdist",
            "pyversion": "py3" if dist.kind == "wheel" else "source",
            **digests.form_fields(),
        }
        boundary = secrets.token_hex(16)
        part = f"--{boundary}\r\nContent-Disposition: form-data; name="
        head = b"".join(
            f'{part}"{key}"\r\n\r\n{value}\r\n'.encode() for key, value in fields.items()
        )
        head += (
            f'{part}"content"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + digests.size + len(tail)),
        }
        return cls(path, head, tail, headers)

    async def body(self) -> AsyncIterator[bytes]:
        yield self.head
        async with await trio.open_file(self.path, "rb") as file:
            while chunk := await file.read(CHUNK):
                yield chunk
        yield self.tail
