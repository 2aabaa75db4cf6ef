"""Push triggers: `POST /hooks/github`, `/hooks/gitlab` and `/hooks/gitea` check a watched
repository at once when a tag is pushed to it, instead of at the next periodic check.

Polling stays the default (a sponsor cannot add a webhook to a repository they do not own); these
are for teams that own theirs. Each host proves the request is its own as it documents it:

- GitHub and Gitea sign the body with HMAC-SHA256 of the shared secret: `X-Hub-Signature-256:
  sha256=HEX` (Gitea also sends the bare hex as `X-Gitea-Signature`);
- GitLab sends the secret itself as `X-Gitlab-Token`.

The secret is the file `watcher.webhook-secret-file` names, or the systemd credential
`webhook-secret`; without one the hooks are off (404). It is compared in constant time and never
logged. A bad or missing signature gets 401 and triggers nothing; a repository that is not watched
404; a body over `MAX_BODY` 413 (read no further); a ping 200; a push of branches only 202 and
nothing to do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from insiders.errors import HookRefused
from insiders.index.asgi import Receive, Scope, Send
from insiders.repos.registry import Repo

log = logging.getLogger(__name__)

Host = Literal["github", "gitlab", "gitea"]
HOSTS: tuple[Host, ...] = ("github", "gitlab", "gitea")
# A tag push is a few kilobytes; GitHub caps its payloads far above that, but a push with many
# commits is never what this endpoint acts on.
MAX_BODY = 256 * 1024


# -- pure parts --------------------------------------------------------------------------------


def signature_ok(host: Host, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the request carries the host's proof of the shared secret (constant time)."""
    if host == "gitlab":
        token = headers.get("x-gitlab-token", "")
        return hmac.compare_digest(token.encode(), secret.encode())
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    signed = headers.get("x-hub-signature-256", "")
    if signed:
        return hmac.compare_digest(signed.encode(), f"sha256={expected}".encode())
    if host == "gitea" and (bare := headers.get("x-gitea-signature", "")):
        return hmac.compare_digest(bare.encode(), expected.encode())
    return False


@dataclass(frozen=True)
class Event:
    kind: Literal["ping", "tag", "other"]
    repository: str = ""  # how the host names it, for messages
    locations: frozenset[str] = field(default_factory=frozenset)  # normalised, see `location_key`


def parse_event(host: Host, headers: Mapping[str, str], payload: Any) -> Event:
    """What a (verified) delivery says, in each host's documented payload shape."""
    if not isinstance(payload, dict):
        raise HookRefused(400, "the body is not a JSON object")
    if host == "gitlab":
        name = headers.get("x-gitlab-event", "")
        project = payload.get("project") or {}
        repository = str(project.get("path_with_namespace", ""))
        urls = [project.get(k) for k in ("git_http_url", "git_ssh_url", "web_url", "http_url")]
        is_tag = payload.get("object_kind") == "tag_push" or name == "Tag Push Hook"
    else:
        name = headers.get(f"x-{host}-event", "") or headers.get("x-github-event", "")
        if name == "ping":
            return Event(kind="ping")
        project = payload.get("repository") or {}
        repository = str(project.get("full_name", ""))
        urls = [project.get(k) for k in ("clone_url", "ssh_url", "html_url", "git_url")]
        ref = str(payload.get("ref", ""))
        is_tag = (name == "push" and ref.startswith("refs/tags/")) or (
            name == "create" and payload.get("ref_type") == "tag"
        )
    if not is_tag:
        return Event(kind="other", repository=repository)
    keys = {location_key(u) for u in urls if isinstance(u, str) and u}
    if repository:
        keys.add(f"{host}:{repository.lower()}")
    return Event(kind="tag", repository=repository, locations=frozenset(keys - {""}))


_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.+)$")


def location_key(url: str) -> str:
    """`host/path` of a git URL, lowercased, without user, port, scheme or `.git`: the form two
    spellings of one repository (https, ssh, scp-like) share; `file:PATH` for a file:// URL or a
    path."""
    text = url.strip()
    if text.startswith(("file://", "/")):
        # A repository on this machine (a file:// URL or a path) has no host: its path is the key.
        path = text.removeprefix("file://").rstrip("/").removesuffix(".git").rstrip("/")
        return f"file:{path}" if path else ""  # paths are case-sensitive
    if "://" in text:
        rest = text.split("://", 1)[1]
        authority, _, path = rest.partition("/")
        host = authority.rpartition("@")[2].split(":")[0]
    elif match := _SCP.match(text):
        host, path = match["host"], match["path"]
    else:
        return ""
    path = path.strip("/").removesuffix(".git").strip("/")
    return f"{host.lower()}/{path.lower()}" if host and path else ""


def repo_keys(repo: Repo, github_url: str) -> set[str]:
    if repo.source.kind == "github":
        owner_repo = repo.source.location.lower()
        return {f"github:{owner_repo}", location_key(f"{github_url.rstrip('/')}/{owner_repo}")}
    return {location_key(repo.source.location)} - {""}


def matching(repos: Iterable[Repo], event: Event, github_url: str) -> list[Repo]:
    return [r for r in repos if repo_keys(r, github_url) & event.locations]


# -- the endpoint --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """The ASGI side; `trigger` queues a check (the watcher's `schedule`)."""

    repos: Callable[[], Sequence[Repo]]
    trigger: Callable[[Sequence[Repo]], None]
    secret: Callable[[], Awaitable[str | None]]
    github_url: Callable[[], str]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, message = await self._handle(scope, receive)
        except HookRefused as refusal:
            status, message = refusal.status, str(refusal)
            log.info("webhook %s refused (%d): %s", scope["path"], status, message)
        await _text(send, status, message)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        host = scope["path"].removeprefix("/hooks/").strip("/")
        if host not in HOSTS:
            raise HookRefused(
                404, f"no webhook {scope['path']}: use /hooks/github, /hooks/gitlab or /hooks/gitea"
            )
        if scope["method"] != "POST":
            raise HookRefused(405, "webhooks are POST requests")
        secret = await self.secret()
        if not secret:
            raise HookRefused(
                404,
                "webhooks are off: set watcher.webhook-secret-file "
                "(or the systemd credential webhook-secret)",
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive, headers)
        checked_host: Host = host
        if not signature_ok(checked_host, headers, body, secret):
            raise HookRefused(401, "bad or missing signature: nothing was triggered")
        try:
            payload = json.loads(body)
        except ValueError:
            raise HookRefused(
                400, "the body is not JSON (set the content type to application/json)"
            ) from None
        event = parse_event(checked_host, headers, payload)
        if event.kind == "ping":
            return 200, "pong: the secret matches"
        if event.kind == "other":
            return 202, "not a tag push: nothing to check"
        found = matching(self.repos(), event, self.github_url())
        if not found:
            raise HookRefused(404, f"no watched repository for {event.repository or 'this push'}")
        self.trigger(found)
        names = ", ".join(r.dist for r in found)
        log.info("webhook (%s): tag pushed to %s, checking %s", host, event.repository, names)
        return 202, f"checking {names}"


async def _read_body(receive: Receive, headers: Mapping[str, str]) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HookRefused(413, f"a webhook body is at most {MAX_BODY} bytes")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HookRefused(400, "the client went away")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise HookRefused(413, f"a webhook body is at most {MAX_BODY} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def _text(send: Send, status: int, message: str) -> None:
    body = (message + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
