"""Access tokens: only their sha256 is stored; the secret is shown once, when it is made.

Tokens are long random strings, so a plain sha256 is enough (no password-style stretching needed),
and checking one costs microseconds per request.

Scopes: a `read` token reads the index (when `[server] read-access = "token"`); an `upload` token
uploads, to every project or only to the projects it names, and reads as well: whoever may publish
a project may see what is published (one token for a CI job that uploads then installs). Any token
may expire. A refusal names the token (its name, never its secret) and says why, so the person
holding it knows what to fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from insiders.errors import TokenError, TokenRefused

from .fsutil import atomic_write
from .names import normalize

log = logging.getLogger(__name__)

Scope = Literal["upload", "read"]
PREFIX = "insiders-"
FIRST_TOKEN_FILE = "upload-token"
# Last use is kept in memory at every request and written to disk at most this often.
USE_SAVE_INTERVAL = 60.0
BUILDS_TOKEN = "insidersd-builds"


class Token(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    scope: Scope
    sha256: str
    created: float
    # Normalised project names an upload token is limited to; () means every project.
    projects: tuple[str, ...] = ()
    expires: float | None = None  # wall-clock time; None: never
    last_used: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


class TokenFile(msgspec.Struct, kw_only=True):
    tokens: list[Token] = msgspec.field(default_factory=list)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Tokens:
    """The token list, persisted in one file written atomically on every change."""

    def __init__(self, path: Path, tokens: list[Token]) -> None:
        self.path = path
        self._tokens = tokens
        self._used: dict[str, float] = {}  # name -> last use not yet written
        self._saved_use = time.monotonic()
        # Read tokens lent to running builds (see `lend`), by sha256: in memory only, never listed.
        self._lent: dict[str, Token] = {}

    @classmethod
    def open(cls, data_dir: Path) -> Tokens:
        """Load the tokens; on first start make one upload token and leave it in a 0600 file."""
        path = data_dir / "tokens.json"
        try:
            tokens = msgspec.json.decode(path.read_bytes(), type=TokenFile).tokens
        except FileNotFoundError:
            store = cls(path, [])
            secret = store.create("default", "upload")
            secret_file = data_dir / FIRST_TOKEN_FILE
            atomic_write(secret_file, f"{secret}\n".encode(), mode=0o600)
            log.warning(
                "created the first upload token; it is in %s (readable by this user only)",
                secret_file,
            )
            return store
        return cls(path, tokens)

    def all(self) -> list[Token]:
        return [self._with_use(t) for t in self._tokens]

    def _with_use(self, token: Token) -> Token:
        used = self._used.get(token.name)
        return token if used is None else msgspec.structs.replace(token, last_used=used)

    def create(
        self,
        name: str,
        scope: Scope,
        *,
        projects: tuple[str, ...] = (),
        expires: float | None = None,
    ) -> str:
        """Make a token and return its secret (blocking write: call it from a thread)."""
        if any(t.name == name for t in self._tokens):
            raise TokenError(f"a token named {name!r} exists already")
        if projects and scope != "upload":
            raise TokenError("--project limits an upload token; a read token reads the whole index")
        if expires is not None and expires <= time.time():
            raise TokenError(f"the expiry {utc(expires)} is in the past")
        secret = PREFIX + secrets.token_urlsafe(32)
        token = Token(
            name=name,
            scope=scope,
            sha256=_digest(secret),
            created=time.time(),
            projects=tuple(sorted({normalize(p) for p in projects})),
            expires=expires,
        )
        self._save([*self._tokens, token])
        return secret

    @contextlib.contextmanager
    def lend(self, borrower: str) -> Iterator[str]:
        """A read token for the block's duration: a build's credential for its build dependencies
        (they resolve through this index), held in memory, revoked when the build ends, so what a
        build leaks of it is worth nothing afterwards."""
        secret = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(secret)
        name = f"{BUILDS_TOKEN}-{borrower}"
        self._lent[digest] = Token(name=name, scope="read", sha256=digest, created=time.time())
        try:
            yield secret
        finally:
            del self._lent[digest]

    def revoke(self, name: str) -> None:
        """Delete a token; the first-start secret file goes too when it holds this token."""
        gone = [t for t in self._tokens if t.name == name]
        if not gone:
            raise TokenError(f"no token named {name!r}")
        self._used.pop(name, None)
        self._save([t for t in self._tokens if t.name != name])
        secret_file = self.path.parent / FIRST_TOKEN_FILE
        try:
            held = secret_file.read_text().strip()
        except FileNotFoundError:
            return
        if hmac.compare_digest(_digest(held), gone[0].sha256):
            secret_file.unlink()
            log.info("removed %s: the token it held is revoked", secret_file)

    def check(self, secret: str, scope: Scope) -> Token | None:
        """The token this secret belongs to if it grants `scope` now, else None."""
        try:
            return self.verify(secret, scope)
        except TokenRefused:
            return None

    def verify(self, secret: str, scope: Scope, project: str | None = None) -> Token:
        """The token granting `scope` (for `project`, when uploading), or TokenRefused saying why.

        A use is recorded in memory (see `save_use`).
        """
        digest = _digest(secret)
        if scope == "read" and (lent := self._lent.get(digest)) is not None:
            return lent
        token = next((t for t in self._tokens if hmac.compare_digest(t.sha256, digest)), None)
        if token is None:
            raise TokenRefused("Invalid token: it is unknown or revoked", known=False)
        now = time.time()
        if token.expired(now):
            assert token.expires is not None
            raise TokenRefused(
                f"Token {token.name} expired on {utc(token.expires)}: "
                "ask for a new one (insidersctl tokens create)",
                known=True,
            )
        if scope == "upload" and token.scope != "upload":
            raise TokenRefused(
                f"Token {token.name} is a {token.scope} token; uploads need an upload token",
                known=True,
            )
        if project is not None:
            self.verify_project(token, project)
        self._used[token.name] = now
        return token

    @staticmethod
    def verify_project(token: Token, project: str) -> None:
        """TokenRefused when `token` is limited to other projects than `project`."""
        if token.projects and normalize(project) not in token.projects:
            raise TokenRefused(
                f"Token {token.name} may not upload to project {normalize(project)} "
                f"(it may upload to: {', '.join(token.projects)})",
                known=True,
            )

    def use_pending(self) -> bool:
        """Whether uses were recorded since the last save, and it is time to write them."""
        return bool(self._used) and time.monotonic() - self._saved_use >= USE_SAVE_INTERVAL

    def save_use(self) -> None:
        """Write the recorded last uses (blocking: call it from a thread)."""
        if self._used:
            self._save(self._tokens)
        self._saved_use = time.monotonic()

    def _save(self, tokens: list[Token]) -> None:
        """Write `tokens` with the uses recorded so far (runs in a thread, while requests record
        more: the copy of the pending uses is taken at once, and only those written are dropped)."""
        used = dict(self._used)
        merged = [
            t if t.name not in used else msgspec.structs.replace(t, last_used=used[t.name])
            for t in tokens
        ]
        atomic_write(self.path, msgspec.json.encode(TokenFile(tokens=merged)), mode=0o600)
        self._tokens = merged
        for name, when in used.items():
            if self._used.get(name) == when:
                del self._used[name]
