"""Access tokens: only their sha256 is stored; the secret is shown once, when it is made.

Tokens are long random strings, so a plain sha256 is enough (no password-style stretching needed),
and checking one costs microseconds per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Literal

import msgspec

from .store import atomic_write

log = logging.getLogger(__name__)

Scope = Literal["upload", "read"]
PREFIX = "insiders-"
FIRST_TOKEN_FILE = "upload-token"


class Token(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    scope: Scope
    sha256: str
    created: float


class TokenFile(msgspec.Struct, kw_only=True):
    tokens: list[Token] = msgspec.field(default_factory=list)


class TokenError(Exception):
    pass


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """The token list, persisted in one file written atomically on every change."""

    def __init__(self, path: Path, tokens: list[Token]) -> None:
        self.path = path
        self._tokens = tokens

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
        return list(self._tokens)

    def create(self, name: str, scope: Scope) -> str:
        """Make a token and return its secret (blocking write: call it from a thread)."""
        if any(t.name == name for t in self._tokens):
            raise TokenError(f"a token named {name!r} exists already")
        secret = PREFIX + secrets.token_urlsafe(32)
        token = Token(name=name, scope=scope, sha256=_digest(secret), created=time.time())
        self._save([*self._tokens, token])
        return secret

    def revoke(self, name: str) -> None:
        remaining = [t for t in self._tokens if t.name != name]
        if len(remaining) == len(self._tokens):
            raise TokenError(f"no token named {name!r}")
        self._save(remaining)

    def check(self, secret: str, scope: Scope) -> Token | None:
        """The token this secret belongs to if it grants `scope` (an upload token may also read)."""
        digest = _digest(secret)
        for token in self._tokens:
            if hmac.compare_digest(token.sha256, digest) and (
                token.scope == scope or token.scope == "upload"
            ):
                return token
        return None

    def _save(self, tokens: list[Token]) -> None:
        atomic_write(self.path, msgspec.json.encode(TokenFile(tokens=tokens)), mode=0o600)
        self._tokens = tokens
