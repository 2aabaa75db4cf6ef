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

Anyone can reach these paths (they are outside the read gate: the senders cannot hold a read
token), so nothing is believed before the proof, and the proof costs little memory:

- the proof's header is looked at before any of the body is read (GitLab's token is the whole
  proof; a GitHub or Gitea request without a signature is refused unread);
- the body's HMAC is computed as the body arrives; a declared or counted size over `MAX_BODY`
  is refused at once, and the bodies held while their signature is unknown share one budget
  (`UNVERIFIED_BUDGET`): past it a delivery is answered 503 rather than held, so a flood of
  anonymous bodies costs a fixed amount of memory, however many arrive at once; a body gets
  `BODY_DEADLINE` seconds to arrive (408), so a trickling sender cannot keep its share;
- a delivery id seen in the last day (`X-GitHub-Delivery`, `X-Gitea-Delivery`, GitLab's
  `X-Gitlab-Event-UUID` or `Idempotency-Key`) is answered 200 and does nothing. The ids are kept
  in memory (at most `Deliveries.limit`): after a restart a redelivery is acted on again, which
  the watcher's push rule makes harmless; the id is not signed either, so that rule, not this
  memory, is what makes a replayed tag push start nothing (see `Watcher.push`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from insiders.config import Settings
from insiders.errors import HookRefused
from insiders.http.answers import send_text
from insiders.http.asgi import Receive, Scope, Send
from insiders.logs import shown
from insiders.repos.registry import Repo

log = logging.getLogger(__name__)

Host = Literal["github", "gitlab", "gitea"]
HOSTS: tuple[Host, ...] = ("github", "gitlab", "gitea")
# A tag push is a few kilobytes; GitHub caps its payloads far above that, but a push with many
# commits is never what this endpoint acts on.
MAX_BODY = 256 * 1024
# Bytes of bodies held, across all requests, while their signature is not known yet.
UNVERIFIED_BUDGET = 4 * MAX_BODY
# Seconds a body may take to arrive: a sender that trickles cannot keep its share of the budget.
BODY_DEADLINE = 10.0
DELIVERY_HEADERS = (
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gitlab-event-uuid",
    "idempotency-key",
)
DELIVERY_MEMORY = 24 * 3600.0  # seconds a delivery id is remembered
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


# -- pure parts --------------------------------------------------------------------------------


def claimed_signature(host: Host, headers: Mapping[str, str]) -> str | None:
    """The hex HMAC-SHA256 a GitHub or Gitea request claims for its body (None: no well-formed
    claim, so the body is not worth reading)."""
    signed = headers.get("x-hub-signature-256", "")
    if signed:
        claim = signed.removeprefix("sha256=") if signed.startswith("sha256=") else ""
    else:
        claim = headers.get("x-gitea-signature", "") if host == "gitea" else ""
    return claim.lower() if _HEX64.match(claim) else None


def token_ok(headers: Mapping[str, str], secret: str) -> bool:
    """GitLab's proof: the secret itself (constant time)."""
    token = headers.get("x-gitlab-token", "")
    return hmac.compare_digest(token.encode(), secret.encode())


def signature_ok(host: Host, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the request carries the host's proof of the shared secret (constant time)."""
    if host == "gitlab":
        return token_ok(headers, secret)
    claim = claimed_signature(host, headers)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return claim is not None and hmac.compare_digest(claim.encode(), expected.encode())


@dataclass(frozen=True)
class Event:
    kind: Literal["ping", "tag", "other"]
    repository: str = ""  # how the host names it, for messages
    locations: frozenset[str] = field(default_factory=frozenset)  # normalised, see `location_key`
    tag: str = ""  # the tag pushed


def parse_event(host: Host, headers: Mapping[str, str], payload: Any) -> Event:
    """What a (verified) delivery says, in each host's documented payload shape."""
    if not isinstance(payload, dict):
        raise HookRefused(400, "the body is not a JSON object")
    if host == "gitlab":
        name = headers.get("x-gitlab-event", "")
        project = payload.get("project") or {}
        repository = str(project.get("path_with_namespace", ""))
        urls = [project.get(k) for k in ("git_http_url", "git_ssh_url", "web_url", "http_url")]
        ref = str(payload.get("ref", ""))
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
    if not is_tag or _deleted(payload):
        return Event(kind="other", repository=repository)
    keys = {location_key(u) for u in urls if isinstance(u, str) and u}
    if repository:
        keys.add(f"{host}:{repository.lower()}")
    tag = ref.removeprefix("refs/tags/")
    return Event(kind="tag", repository=repository, locations=frozenset(keys - {""}), tag=tag)


def _deleted(payload: dict[str, Any]) -> bool:
    """A push that deleted its tag (nothing to build): GitHub says so; GitLab and Gitea send an
    `after` of zeros."""
    after = payload.get("after")
    return payload.get("deleted") is True or (isinstance(after, str) and after.strip("0") == "")


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


class Deliveries:
    """The delivery ids handled in the last `keep` seconds, at most `limit` of them (the oldest
    go first): in memory, see the module's docstring."""

    def __init__(self, keep: float = DELIVERY_MEMORY, limit: int = 10_000) -> None:
        self.keep = keep
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, key: str) -> bool:
        self._forget(time.monotonic())
        return key in self._seen

    def remember(self, key: str) -> None:
        now = time.monotonic()
        self._forget(now)
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def _forget(self, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now - self.keep:
            self._seen.popitem(last=False)


def delivery_key(host: Host, headers: Mapping[str, str]) -> str | None:
    for name in DELIVERY_HEADERS:
        if value := headers.get(name, "").strip():
            return f"{host}:{value[:128]}"
    return None


@dataclass
class Budget:
    """Bytes that unverified bodies may hold at once, all requests together."""

    total: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.total:
            return False
        self.held += size
        return True


@dataclass(kw_only=True)
class Hooks:
    """The ASGI side. `trigger(repos, tag)` hands a tag push to the watcher (its `push`), which
    returns the repositories it will check."""

    repos: Callable[[], Sequence[Repo]]
    trigger: Callable[[Sequence[Repo], str], Sequence[Repo]]
    secret: Callable[[], Awaitable[str | None]]
    github_url: str  # [watcher] github-url: what a GitHub repository's push names
    deliveries: Deliveries = field(default_factory=Deliveries)
    budget: Budget = field(default_factory=lambda: Budget(UNVERIFIED_BUDGET))

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        self.github_url = new.watcher.github_url
        return ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, message = await self._handle(scope, receive)
        except HookRefused as refusal:
            status, message = refusal.status, str(refusal)
            log.info("webhook %s refused (%d): %s", shown(scope["path"]), status, message)
        await send_text(send, status, message)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        host = scope["path"].removeprefix("/hooks/").strip("/")
        if host not in HOSTS:
            raise HookRefused(
                404,
                f"no webhook {shown(scope['path'], 100)}: use /hooks/github, /hooks/gitlab or "
                "/hooks/gitea",
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
        checked_host: Host = host
        body = await self._verified_body(checked_host, headers, secret, receive)
        delivery = delivery_key(checked_host, headers)
        if delivery is not None and self.deliveries.seen(delivery):
            return 200, "this delivery was handled already: nothing to do"
        status, message = self._act(checked_host, headers, body)
        if delivery is not None:
            self.deliveries.remember(delivery)
        return status, message

    async def _verified_body(
        self, host: Host, headers: Mapping[str, str], secret: str, receive: Receive
    ) -> bytes:
        """The body, once its proof holds; refused before reading when the proof cannot."""
        unsigned = HookRefused(401, "bad or missing signature: nothing was triggered")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise HookRefused(413, f"a webhook body is at most {MAX_BODY} bytes")
        if host == "gitlab":
            if not token_ok(headers, secret):
                raise unsigned
            return await _read_body(receive, self.budget, None)
        claim = claimed_signature(host, headers)
        if claim is None:
            raise unsigned
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        body = await _read_body(receive, self.budget, mac)
        if not hmac.compare_digest(claim.encode(), mac.hexdigest().encode()):
            raise unsigned
        return body

    def _act(self, host: Host, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """What a verified delivery asks for."""
        try:
            payload = json.loads(body)
        except ValueError:
            raise HookRefused(
                400, "the body is not JSON (set the content type to application/json)"
            ) from None
        event = parse_event(host, headers, payload)
        if event.kind == "ping":
            return 200, "pong: the secret matches"
        if event.kind == "other":
            return 202, "not a tag push: nothing to check"
        found = matching(self.repos(), event, self.github_url)
        if not found:
            what = shown(event.repository, 100) if event.repository else "this push"
            raise HookRefused(404, f"no watched repository for {what}")
        names = ", ".join(r.dist for r in found)
        checking = self.trigger(found, event.tag)
        tag = shown(event.tag, 100)
        if not checking:
            log.info("webhook (%s): %s pushed to %s, known already", host, tag, names)
            return 200, (
                f"{tag} is not a new version of {names}: nothing to do now (the periodic "
                "check retries a failed version with backoff; insidersctl update checks now)"
            )
        checked = ", ".join(r.dist for r in checking)
        log.info("webhook (%s): %s pushed to %s, checking %s", host, tag, names, checked)
        return 202, f"checking {checked}"


async def _read_body(receive: Receive, budget: Budget, mac: hmac.HMAC | None) -> bytes:
    """The body, at most MAX_BODY bytes within BODY_DEADLINE seconds, hashed into `mac` as it
    arrives; its bytes count against `budget` until it is read (the caller checks the signature
    right after)."""
    chunks: list[bytes] = []
    try:
        with trio.move_on_after(BODY_DEADLINE):
            return await _read_chunks(receive, budget, mac, chunks)
        raise HookRefused(408, f"the body took longer than {BODY_DEADLINE:.0f} s to arrive")
    finally:
        budget.held -= sum(map(len, chunks))
        chunks.clear()


async def _read_chunks(
    receive: Receive, budget: Budget, mac: hmac.HMAC | None, chunks: list[bytes]
) -> bytes:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HookRefused(400, "the client went away")
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            raise HookRefused(413, f"a webhook body is at most {MAX_BODY} bytes")
        if not budget.take(len(chunk)):
            raise HookRefused(503, "too many webhook deliveries at once: deliver it again")
        if mac is not None:
            mac.update(chunk)
        chunks.append(chunk)  # taken from the budget: released by the caller
        if not message.get("more_body", False):
            return b"".join(chunks)
