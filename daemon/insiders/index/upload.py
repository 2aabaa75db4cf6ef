"""The legacy upload API (what twine and `uv publish` speak): stream, check, publish atomically.

The multipart body is decoded as it arrives (werkzeug's sans-IO decoder); the file part goes
straight to a temp file in the store while three digests are computed, so memory stays flat.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from insiders.distributions import inspect
from insiders.errors import (
    FileConflict,
    InvalidDistribution,
    InvalidFilename,
    ProjectClosed,
    TokenRefused,
    UploadRefused,
)
from insiders.index.asgi import Receive
from insiders.names import (
    check_normalized,
    is_valid_name,
    normalize,
    parse_dist_filename,
    parse_version,
)
from insiders.publish import Digests, stored_entry
from insiders.store import Store, is_disk_full
from insiders.tokens import Token, Tokens

from .access import CHALLENGE, MalformedCredentials, basic_credentials

log = logging.getLogger(__name__)

# Form fields other than the file (the long description among them) may not add up to more.
MAX_FIELDS_SIZE = 16 << 20
MAX_PARTS = 1000
# What the decoder may hold while it looks for a boundary or the end of a part's headers: a
# preamble, headers or an epilogue that never end must not fill memory (any framing, chunked too).
MAX_DECODER_BUFFER = 1 << 20
# Beyond the file and the fields: part headers, boundaries, the odd extra part.
BODY_SLACK = 1 << 20
# Writes to disk happen in a thread, in batches, so the event loop never waits on the disk.
WRITE_BATCH = 1 << 20
_ENDED_EARLY = "The multipart body ended before its closing boundary (a truncated upload)"


@dataclass
class _Received:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    md5: Any = field(default_factory=hashlib.md5)
    blake2b: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=32))

    def absorb(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)
        self.blake2b.update(chunk)


def authenticate(authorization: str | None, tokens: Tokens) -> Token:
    """The upload token in a Basic `__token__:<token>` header, or UploadRefused.

    No refusal quotes what the client sent: a token typed in the user field must not reach a
    reply or the log.
    """
    challenge = [CHALLENGE]
    try:
        credentials = basic_credentials((authorization or "").encode("latin-1"))
    except MalformedCredentials as error:
        raise UploadRefused(400, str(error), challenge) from None
    if credentials is None:
        raise UploadRefused(
            401,
            "Uploads need credentials: user __token__ and an upload token as password "
            "(see the file upload-token in the data directory, or insidersctl tokens create)",
            challenge,
        )
    user, secret = credentials
    if user != "__token__":
        raise UploadRefused(
            403, "Use the user name __token__, and the token as the password", challenge
        )
    try:
        return tokens.verify(secret, "upload")
    except TokenRefused as refusal:
        raise UploadRefused(403, refusal.message) from None


async def receive_upload(
    receive: Receive, content_type: str, temp: Path, max_size: int
) -> _Received:
    """Decode the multipart body; the `content` part goes to `temp`."""
    boundary = _boundary(content_type)
    decoder = MultipartDecoder(
        boundary, max_form_memory_size=MAX_DECODER_BUFFER, max_parts=MAX_PARTS
    )
    got = _Received()
    fields_size = 0
    body_size = 0
    max_body = max_size + MAX_FIELDS_SIZE + BODY_SLACK
    current: Field | File | None = None
    value = bytearray()
    pending = bytearray()
    complete = False

    async with await trio.open_file(temp, "wb") as out:

        async def flush() -> None:
            if pending:
                chunk = bytes(pending)
                pending.clear()
                await trio.to_thread.run_sync(got.absorb, chunk)
                await out.write(chunk)

        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise UploadRefused(400, "The client went away before the upload was complete")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            # The cap holds whatever the framing: a chunked body announces no length.
            body_size += len(body)
            if body_size > max_body:
                raise UploadRefused(413, f"Upload too large: the limit is {max_size} bytes")
            try:
                if body:
                    decoder.receive_data(body)
                if not more:
                    decoder.receive_data(None)
            except RequestEntityTooLarge:
                raise UploadRefused(
                    413,
                    f"Malformed multipart body: more than {MAX_DECODER_BUFFER >> 20} MiB "
                    "without a boundary or the end of a part's headers",
                ) from None
            while True:
                try:
                    event = decoder.next_event()
                except RequestEntityTooLarge:
                    raise UploadRefused(
                        413, f"Too many parts in the form: the limit is {MAX_PARTS}"
                    ) from None
                except ValueError as error:
                    if decoder.complete:
                        raise UploadRefused(400, _ENDED_EARLY) from None
                    raise UploadRefused(400, f"Malformed multipart body: {error}") from None
                if isinstance(event, Epilogue):
                    complete = True
                    break
                if isinstance(event, NeedData):
                    break
                if isinstance(event, File):
                    current = event
                    if event.name == "content":
                        if got.filename is not None:
                            raise UploadRefused(400, "One file per upload, please")
                        got.filename = event.filename
                elif isinstance(event, Field):
                    current = event
                    value.clear()
                elif isinstance(event, Data) and current is not None:
                    if isinstance(current, File) and current.name == "content":
                        got.size += len(event.data)
                        if got.size > max_size:
                            raise UploadRefused(
                                413, f"File too large: the limit is {max_size} bytes"
                            )
                        pending += event.data
                        if len(pending) >= WRITE_BATCH or not event.more_data:
                            await flush()
                    elif isinstance(current, Field):
                        fields_size += len(event.data)
                        if fields_size > MAX_FIELDS_SIZE:
                            raise UploadRefused(413, "The form's fields are too large")
                        value += event.data
                        if not event.more_data:
                            got.fields[current.name] = value.decode("utf-8", "replace")
                            value.clear()
        await flush()
    if not complete:
        raise UploadRefused(400, _ENDED_EARLY)
    return got


def _disk_full(error: OSError) -> UploadRefused:
    """507 for a full disk (nothing was stored); any other OSError is not ours to explain."""
    if not is_disk_full(error):
        raise error
    log.error("upload refused: no space left on the store's disk (%s)", error)
    return UploadRefused(
        507, "Insufficient Storage: no space left on the index's disk; nothing was stored"
    )


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else f"{value[:80]!r}... ({len(value)} characters)"


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise UploadRefused(400, "Uploads are multipart/form-data (the legacy upload API)")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise UploadRefused(400, "multipart/form-data without a boundary")


def _check_digest(got: _Received, fields: dict[str, str]) -> None:
    for key, hasher in (
        ("sha256_digest", got.sha256),
        ("md5_digest", got.md5),
        ("blake2_256_digest", got.blake2b),
    ):
        claimed = fields.get(key, "").strip().lower()
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        if claimed and not hmac.compare_digest(claimed.encode(), hasher.hexdigest().encode()):
            raise UploadRefused(
                400, f"{key} does not match the file: the upload was damaged on its way"
            )


async def handle_upload(
    receive: Receive, headers: dict[bytes, bytes], store: Store, tokens: Tokens, max_size: int
) -> tuple[int, str]:
    """Run one upload to the end; returns (status, message) or raises UploadRefused."""
    token = authenticate(headers.get(b"authorization", b"").decode("latin-1") or None, tokens)
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length[:20]) > max_size + MAX_FIELDS_SIZE:
        raise UploadRefused(413, f"Upload too large: the limit is {max_size} bytes")
    try:
        temp = store.new_incoming()
    except OSError as error:
        raise _disk_full(error) from None
    try:
        got = await receive_upload(
            receive, headers.get(b"content-type", b"").decode("latin-1"), temp, max_size
        )
        fields = got.fields
        action = fields.get(":action")
        if action != "file_upload":
            raise UploadRefused(400, f"Unsupported :action {action!r}; only file_upload is")
        if got.filename is None:
            raise UploadRefused(400, "The upload has no file (the form field 'content')")
        name, version = fields.get("name", "").strip(), fields.get("version", "").strip()
        if not is_valid_name(name):
            raise UploadRefused(
                400,
                f"Invalid project name {_shown(name)}: ASCII letters, digits and . _ - inside, "
                "at most 128 characters",
            )
        if parse_version(version) is None:
            raise UploadRefused(400, f"Invalid version {_shown(version)} (PEP 440)")
        try:
            tokens.verify_project(token, name)
        except TokenRefused as refusal:
            raise UploadRefused(403, refusal.message) from None
        try:
            dist = parse_dist_filename(got.filename)
            check_normalized(dist)
        except InvalidFilename as error:
            raise UploadRefused(400, f"Invalid filename: {error}") from None
        if dist.name != normalize(name) or dist.version != parse_version(version):
            raise UploadRefused(
                400,
                f"The filename {dist.filename} does not match the form's project {name} "
                f"version {version}",
            )
        _check_digest(got, fields)
        try:
            meta = await trio.to_thread.run_sync(inspect, temp, dist)
        except InvalidDistribution as error:
            raise UploadRefused(400, f"Invalid distribution: {error}") from None
        digests = Digests(
            got.size, got.sha256.hexdigest(), got.md5.hexdigest(), got.blake2b.hexdigest()
        )
        entry = msgspec.structs.replace(stored_entry(dist, meta, digests), uploaded_by=token.name)
        try:
            added = await store.add(meta.name, entry, temp, meta.raw)
        except FileConflict as error:
            raise UploadRefused(409, str(error)) from None
        except ProjectClosed as error:
            raise UploadRefused(403, str(error)) from None
    except OSError as error:
        raise _disk_full(error) from None
    finally:
        temp.unlink(missing_ok=True)
    if added:
        log.info("published %s (uploaded with token %s)", dist.filename, token.name)
        return 200, f"OK: {dist.filename} published"
    return 200, f"OK: {dist.filename} is published already with the same content"
