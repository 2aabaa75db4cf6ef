"""A mirror in an S3-compatible bucket, through boto3 (the reference client, kept by AWS; every
S3-compatible server is tested against it) in worker threads.

Files are written once, with a conditional PutObject (`If-None-Match: *`): a key that exists is
never overwritten, so a reader never sees a file's bytes change under its hash. Pages are plain
PutObjects (an object is replaced atomically for readers) and carry `Cache-Control: no-cache`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from insiders.config import MirrorSettings
from insiders.credentials import read_secret
from insiders.errors import TargetError

log = logging.getLogger(__name__)

FILE_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


class S3Target:
    kind = "s3"

    def __init__(self, name: str, settings: MirrorSettings, credentials: Path | None) -> None:
        try:
            import boto3
            import botocore.config
        except ImportError:
            raise TargetError(
                "an S3 mirror needs boto3: install insiders[s3] (Debian: python3-boto3)"
            ) from None
        assert settings.bucket is not None
        self.name = name
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        endpoint = settings.endpoint or "the default endpoint"
        self.location = f"s3://{self.bucket}/{self.prefix} at {endpoint}"
        self.requests = 0
        keys: dict[str, Any] = {}
        key_id = read_secret(
            f"mirror-{name}-access-key-id", settings.access_key_id_file, credentials
        )
        secret = read_secret(
            f"mirror-{name}-secret-access-key", settings.secret_access_key_file, credentials
        )
        if key_id and secret:
            keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
        # Our own backoff retries a failed sync. boto3's adaptive mode retries a request once (a
        # throttled one, 503 SlowDown, or a dropped connection) after a backoff with jitter, and
        # slows the whole client down while the server throttles: with many requests in flight a
        # busy bucket gets fewer, not a storm. It soon gives up on an endpoint that does not
        # answer, so a down target never holds a thread for long. One connection per request in
        # flight.
        config = botocore.config.Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 2, "mode": "adaptive"},
            max_pool_connections=max(16, settings.concurrency),
        )
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            config=config,
            **keys,
        )

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """boto3's errors, each turned into a TargetError naming the operation and the target."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.requests += 1
        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            message = f"{info.get('Code', '?')}: {info.get('Message', '')}".rstrip(": ")
            raise TargetError(f"{what} in {self.location}: {message}") from error
        except BotoCoreError as error:
            raise TargetError(f"{what} in {self.location}: {error}") from error

    def prepare(self) -> None:
        """A bucket's prefix is claimed by its root manifest alone (see mirror.claim)."""

    def listing(self, prefix: str) -> dict[str, int]:
        held: dict[str, int] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        with self._translated(f"cannot list {prefix or '/'}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                self.requests += 1
                for item in page.get("Contents", ()):
                    held[item["Key"][len(self.prefix) :]] = item["Size"]
        return held

    def put_file(self, key: str, source: Path, size: int, content_type: str) -> bool:
        from botocore.exceptions import ClientError

        # The store's file may be gone (removed meanwhile): FileNotFoundError goes to the engine.
        body = source.open("rb")
        try:
            with body:
                self._put(key, body, content_type, FILE_CACHE, ContentLength=size, IfNoneMatch="*")
        except TargetError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
            ):
                return False  # written before: a file is written once
            raise
        return True

    def put_page(self, key: str, body: bytes, gzipped: bytes | None, content_type: str) -> None:
        self._put(key, body, content_type, PAGE_CACHE)

    def _put(self, key: str, body: object, content_type: str, cache: str, **extra: object) -> None:
        with self._translated(f"cannot write {key}"):
            self._client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=body,
                ContentType=content_type,
                CacheControl=cache,
                **extra,
            )

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._translated(f"cannot delete {len(batch)} keys"):
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True},
                )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise TargetError(
                    f"cannot delete {first.get('Key')} in {self.location}: "
                    f"{first.get('Code')}: {first.get('Message')}"
                )

    def _body(self, key: str) -> Any | None:
        """The body of the object under `key` (botocore's StreamingBody), or None when there is
        no such object; any other failure is the target's (TargetError)."""
        from botocore.exceptions import ClientError

        try:
            with self._translated(f"cannot read {key}"):
                return self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        except TargetError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "NoSuchKey",
                "404",
            ):
                return None
            raise

    def read(self, key: str) -> bytes | None:
        body = self._body(key)
        if body is None:
            return None
        with self._translated(f"cannot read {key}"):
            data: bytes = body.read()
            return data

    def fetch(self, key: str, dest: Path) -> None:
        with self._translated(f"cannot read {key}"), dest.open("wb") as out:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            for chunk in answer["Body"].iter_chunks(1 << 20):
                out.write(chunk)

    def digest(self, key: str) -> tuple[int, str] | None:
        body = self._body(key)
        if body is None:
            return None
        hasher = hashlib.sha256()
        size = 0
        with self._translated(f"cannot read {key}"):
            for chunk in body.iter_chunks(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
        return size, hasher.hexdigest()

    def close(self) -> None:
        self._client.close()
