"""Uploading builds to other indexes through the legacy upload API, streamed from disk.

httpx sends the multipart body from an async generator, so a large wheel never sits in memory
and the event loop never waits on a blocking read. Network errors and 5xx answers are retried
with backoff; "already exists" counts as done.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from insiders.config import TargetSettings
from insiders.errors import PublishError
from insiders.names import parse_dist_filename
from insiders.watcher.git import redact

log = logging.getLogger(__name__)

CHUNK = 256 << 10
ATTEMPTS = 4


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


def _digests(path: Path) -> dict[str, str]:
    sha256, md5, blake2 = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            for hasher in (sha256, md5, blake2):
                hasher.update(chunk)
    return {
        "sha256_digest": sha256.hexdigest(),
        "md5_digest": md5.hexdigest(),
        "blake2_256_digest": blake2.hexdigest(),
    }


def _already_exists(response: httpx.Response) -> bool:
    # What twine's --skip-existing recognises: 409, or 400 with "already exist(s)".
    return response.status_code == 409 or (
        response.status_code == 400 and "already exist" in response.text.lower()
    )


async def upload(
    client: httpx.AsyncClient, target: TargetSettings, password: str | None, path: Path
) -> str:
    """Upload one file; "uploaded" or "exists", or PublishError with the index's answer."""
    dist = parse_dist_filename(path.name)
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": str(dist.name),
        "version": str(dist.version),
        "filetype": "bdist_wheel" if dist.kind == "wheel" else "sdist",
        "pyversion": "py3" if dist.kind == "wheel" else "source",
        **await trio.to_thread.run_sync(_digests, path),
    }
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = (await trio.Path(path).stat()).st_size

    async def body() -> AsyncIterator[bytes]:
        yield head
        async with await trio.open_file(path, "rb") as file:
            while chunk := await file.read(CHUNK):
                yield chunk
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    auth: httpx.Auth | httpx.BasicAuth = (
        httpx.BasicAuth(target.username, password) if password is not None else httpx.Auth()
    )
    delay = 1.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.post(target.url, content=body(), headers=headers, auth=auth)
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
