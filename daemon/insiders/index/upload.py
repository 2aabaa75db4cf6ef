"""The legacy upload API (what twine and `uv publish` speak): stream, check, publish atomically.

The multipart body is decoded as it arrives (werkzeug's sans-IO decoder); the file part goes
straight to a temp file in the store while three digests are computed, so memory stays flat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import trio
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Event,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

from insiders.errors import (
    FileConflict,
    InvalidDistribution,
    InvalidFilename,
    MalformedCredentials,
    NotAsClaimed,
    ProjectClosed,
    TokenRefused,
    Translate,
    UploadRefused,
    map_exceptions,
)
from insiders.fsutil import is_disk_full
from insiders.http.access import CHALLENGE, basic_credentials
from insiders.http.asgi import Receive
from insiders.ingest import Claims, Hasher, incoming_file, ingest
from insiders.names import is_valid_name, parse_version
from insiders.store import Store
from insiders.tokens import Token, Tokens

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
    size: int = 0  # the file's bytes decoded so far (the hasher counts those written)
    hasher: Hasher = field(default_factory=Hasher)


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


class _FormReader:
    """The multipart body, decoded as it arrives into a _Received and the file's bytes (in
    `pending`, for the caller to write); every limit holds whatever the framing (a chunked body
    announces no length)."""

    def __init__(self, boundary: bytes, max_size: int) -> None:
        self.decoder = MultipartDecoder(
            boundary, max_form_memory_size=MAX_DECODER_BUFFER, max_parts=MAX_PARTS
        )
        self.got = _Received()
        self.max_size = max_size
        self.body_size = 0
        self.fields_size = 0
        self.current: Field | File | None = None
        self.value = bytearray()
        self.pending = bytearray()
        self.complete = False

    def feed(self, body: bytes, more: bool) -> None:
        """Decode one message of the body; `more` is False for the last."""
        self.body_size += len(body)
        if self.body_size > self.max_size + MAX_FIELDS_SIZE + BODY_SLACK:
            raise UploadRefused(413, f"Upload too large: the limit is {self.max_size} bytes")
        try:
            if body:
                self.decoder.receive_data(body)
            if not more:
                self.decoder.receive_data(None)
        except RequestEntityTooLarge:
            raise UploadRefused(
                413,
                f"Malformed multipart body: more than {MAX_DECODER_BUFFER >> 20} MiB "
                "without a boundary or the end of a part's headers",
            ) from None
        while (event := self._next_event()) is not None:
            self._take(event)

    def _next_event(self) -> Event | None:
        """The next event that carries something; None when the decoder needs more data."""
        try:
            event = self.decoder.next_event()
        except RequestEntityTooLarge:
            raise UploadRefused(
                413, f"Too many parts in the form: the limit is {MAX_PARTS}"
            ) from None
        except ValueError as error:
            if self.decoder.complete:
                raise UploadRefused(400, _ENDED_EARLY) from None
            raise UploadRefused(400, f"Malformed multipart body: {error}") from None
        if isinstance(event, Epilogue):
            self.complete = True
            return None
        if isinstance(event, NeedData):
            return None
        return event

    def _take(self, event: Event) -> None:
        got = self.got
        if isinstance(event, File):
            self.current = event
            if event.name == "content":
                if got.filename is not None:
                    raise UploadRefused(400, "One file per upload, please")
                got.filename = event.filename
        elif isinstance(event, Field):
            self.current = event
            self.value.clear()
        elif not isinstance(event, Data):
            return  # a preamble
        elif isinstance(self.current, File) and self.current.name == "content":
            got.size += len(event.data)
            if got.size > self.max_size:
                raise UploadRefused(413, f"File too large: the limit is {self.max_size} bytes")
            self.pending += event.data
        elif isinstance(self.current, Field):
            self.fields_size += len(event.data)
            if self.fields_size > MAX_FIELDS_SIZE:
                raise UploadRefused(413, "The form's fields are too large")
            self.value += event.data
            if not event.more_data:
                got.fields[self.current.name] = self.value.decode("utf-8", "replace")
                self.value.clear()


async def receive_upload(
    receive: Receive, content_type: str, temp: Path, max_size: int
) -> _Received:
    """Decode the multipart body; the `content` part goes to `temp`, hashed on its way."""
    reader = _FormReader(_boundary(content_type), max_size)
    async with await trio.open_file(temp, "wb") as out:
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise UploadRefused(400, "The client went away before the upload was complete")
            more = message.get("more_body", False)
            reader.feed(message.get("body", b""), more)
            if reader.pending and (len(reader.pending) >= WRITE_BATCH or not more):
                chunk = bytes(reader.pending)
                reader.pending.clear()
                await trio.to_thread.run_sync(reader.got.hasher.update, chunk)
                await out.write(chunk)
    if not reader.complete:
        raise UploadRefused(400, _ENDED_EARLY)
    return reader.got


def _disk_full(error: BaseException) -> UploadRefused:
    """507 for a full disk (nothing was stored); any other OSError is not ours to explain."""
    if not (isinstance(error, OSError) and is_disk_full(error)):
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


# How twine hears each refusal of the upload's content; the messages are the errors' own.
_FOR_TWINE: Translate = {
    TokenRefused: lambda error: UploadRefused(403, str(error)),
    InvalidFilename: lambda error: UploadRefused(400, f"Invalid filename: {error}"),
    InvalidDistribution: lambda error: UploadRefused(400, f"Invalid distribution: {error}"),
    NotAsClaimed: lambda error: UploadRefused(400, str(error)),
    FileConflict: lambda error: UploadRefused(409, str(error)),
    ProjectClosed: lambda error: UploadRefused(403, str(error)),
    OSError: _disk_full,
}


async def handle_upload(
    receive: Receive, headers: dict[bytes, bytes], store: Store, tokens: Tokens, max_size: int
) -> tuple[int, str]:
    """Run one upload to the end; returns (status, message) or raises UploadRefused."""
    token = authenticate(headers.get(b"authorization", b"").decode("latin-1") or None, tokens)
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length[:20]) > max_size + MAX_FIELDS_SIZE:
        raise UploadRefused(413, f"Upload too large: the limit is {max_size} bytes")
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    with map_exceptions(_FOR_TWINE):
        async with incoming_file(store) as temp:
            got = await receive_upload(receive, content_type, temp, max_size)
            filename, claims = _read_form(got, tokens, token)
            digests = got.hasher.digests()
            added = await ingest(
                store, filename, temp, digests, claims=claims, uploaded_by=token.name
            )
    if added:
        log.info("published %s (uploaded with token %s)", filename, token.name)
        return 200, f"OK: {filename} published"
    return 200, f"OK: {filename} is published already with the same content"


def _read_form(got: _Received, tokens: Tokens, token: Token) -> tuple[str, Claims]:
    """The file's name and what the form claims about it; refused here: a form that is not an
    upload, a project or version that cannot be, a project the token may not upload to."""
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
    tokens.verify_project(token, name)
    return got.filename, Claims(name, version, fields)
