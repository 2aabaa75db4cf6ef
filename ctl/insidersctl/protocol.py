"""The control protocol between insidersctl and insidersd: frames, messages and limits, as data.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. A connection opens
with the client's `Hello` and the daemon's `Welcome` (or an `Error`); then each request gets zero or
more `Progress` events and exactly one final reply. Every refusal is an `Error` reply with a code a
script can test and a message a person can act on.

Schema evolution: messages are frozen Structs under two tagged unions (one per direction), each
decoded by one decoder built here once. Unknown fields are ignored and every field added after
version 1.0 has a default, so an older client and a newer daemon keep talking; `PROTOCOL_MINOR` is
bumped when messages or fields are added, `PROTOCOL_VERSION` only for a change an older peer cannot
survive (the daemon then answers a clear "incompatible" error). The shape of `Hello` never changes.

Only the standard library and msgspec are imported here: the client must start fast. (For the
same reason there is no `from __future__ import annotations`: msgspec would compile and evaluate
every field's annotation string when it builds the decoders, a third of the client's start-up.)
"""

import struct
from typing import Final, Literal, TypeVar, get_args

import msgspec

# The protocol's errors live with every other error of the client (one tree); named here too.
from insidersctl.errors import BadMessage, FrameTooLarge, ProtocolError, UnknownMessage
from insidersctl.nesting import too_deep

__all__ = [
    "MAX_DEPTH",
    "MAX_FRAME_SIZE",
    "MAX_REQUEST_SIZE",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "BadMessage",
    "ClientMessage",
    "FrameReader",
    "FrameTooLarge",
    "ProtocolError",
    "Reply",
    "Request",
    "ServerMessage",
    "UnknownMessage",
    "decode_client_message",
    "decode_server_message",
    "encode_frame",
]

PROTOCOL_VERSION: Final = 1
# 1: reload, version states, restart_needed, mirrors; 2: verify; 3: the upstream file cache
# (cache-status, cache-prune, cache-fetch); 4: repos set, refused versions
PROTOCOL_MINOR: Final = 4

HEADER: Final = struct.Struct(">I")
# Replies can list every hosted file of a large index; requests are a few hundred bytes.
MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
MAX_REQUEST_SIZE: Final = 64 * 1024
# Containers nested in a request: the deepest the protocol has is a handful; more is refused
# before decoding (insidersctl.nesting says why).
MAX_DEPTH: Final = 32


# Error codes: stable strings for scripts (`insidersctl --json` prints them).
BAD_REQUEST: Final = "bad-request"  # undecodable or invalid request
UNKNOWN_REQUEST: Final = "unknown-request"  # a request type this daemon does not know
TOO_LARGE: Final = "too-large"
INCOMPATIBLE: Final = "incompatible"  # protocol major versions differ
FORBIDDEN: Final = "forbidden"  # the peer's uid may not use this daemon
TIMEOUT: Final = "timeout"
BUSY: Final = "busy"  # too many connections at once
NOT_FOUND: Final = "not-found"
REFUSED: Final = "refused"  # the request is understood and refused (the message says why)
UNAVAILABLE: Final = "unavailable"  # the part of the daemon that would do it is not running
NO_SPACE: Final = "no-space"  # the daemon's disk is full: nothing was changed
INTERNAL: Final = "internal"  # a bug in the daemon; its log has the traceback


# -- messages ----------------------------------------------------------------------------------


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Request(_Message, frozen=True):
    """Client -> daemon."""


class Reply(_Message, frozen=True):
    """Daemon -> client: the final answer to a request."""


class Hello(_Message, frozen=True, tag="hello"):
    """The first frame of every connection. Its shape never changes, whatever the version."""

    protocol: int = PROTOCOL_VERSION
    minor: int = PROTOCOL_MINOR
    client: str = ""  # the client's own version, for the daemon's log


class Welcome(_Message, frozen=True, tag="welcome"):
    protocol: int = PROTOCOL_VERSION
    minor: int = PROTOCOL_MINOR
    daemon: str = ""  # the daemon's version
    pid: int = 0


class Error(Reply, frozen=True, tag="error"):
    code: str
    message: str


class Progress(_Message, frozen=True, tag="progress"):
    """One step of a long operation; any number precede the final reply."""

    repo: str
    # queued, listing, fetching, building, publishing, done, failed, up-to-date (more may come)
    stage: str
    message: str = ""
    version: str | None = None
    log: str | None = None  # the build log, when there is one
    time: float = 0.0  # wall-clock time of the event


# Requests ------------------------------------------------------------------------------------

VersionPolicy = Literal["newest", "all", "since"]
Scope = Literal["upload", "read"]
ProjectStatus = Literal["active", "archived", "quarantined", "deprecated"]  # PEP 792


class Status(Request, frozen=True, tag="status"):
    """Everything at a glance: the index, the watcher, each repository and mirror (reply:
    StatusReport)."""


class ServerStatus(Request, frozen=True, tag="server-status"):
    """The index alone: its addresses, what it hosts, its upstream (reply: ServerReport)."""


class ListRepos(Request, frozen=True, tag="repos-list"):
    """The watched repositories and their last results (reply: RepoList)."""


class AddRepo(Request, frozen=True, tag="repos-add"):
    """Watch a repository and publish its version tags (reply: RepoAdded)."""

    spec: str
    # The client's working directory: a relative path in `spec` is relative to it.
    cwd: str = ""
    versions: VersionPolicy = "newest"
    since: str | None = None
    publish_to: tuple[str, ...] = ()
    local: bool = True  # publish to this index (besides any publish_to targets)


class _Named(Request, frozen=True):
    """A request about one thing, by its name."""

    name: str


class _OfVersion(Request, frozen=True):
    """A request about one version of a hosted project."""

    project: str
    version: str


class RemoveRepo(_Named, frozen=True, tag="repos-remove"):
    """Stop watching a repository; what it published stays (reply: RepoRemoved)."""


class SetRepo(_Named, frozen=True, tag="repos-set"):
    """Change a watched repository's policy; None keeps a setting as it is (reply: RepoChanged)."""

    versions: VersionPolicy | None = None
    since: str | None = None  # with versions="since"
    publish_to: tuple[str, ...] | None = None
    local: bool | None = None


class Update(Request, frozen=True, tag="update"):
    """Check repositories for new tags now: Progress events, then an UpdateReport."""

    names: tuple[str, ...] = ()  # none: every repository
    force: bool = False  # rebuild the newest version even if published (identical bytes: no-op)
    wait: bool = True  # stream progress and report; False: queue the check and reply at once
    # Build exactly these versions (with one NAME): how a removed version is brought back.
    versions: tuple[str, ...] = ()


class WatcherControl(Request, frozen=True, tag="watcher"):
    """Pause or resume the periodic checks, or only ask how they are (reply: WatcherReport)."""

    action: Literal["start", "stop", "status"] = "status"


class Logs(Request, frozen=True, tag="logs"):
    """Where the daemon's log is; the client reads it (journalctl or the file) itself (reply:
    LogsLocation)."""

    # `logs --build NAME` without a VERSION: which build log to show is the daemon's to say.
    build: str | None = None


class Reload(Request, frozen=True, tag="reload"):
    """Re-read the configuration now; the reply (Reloaded) comes once the new settings are in
    force."""


class ListTokens(Request, frozen=True, tag="tokens-list"):
    """The tokens, by name and scope: a secret is never sent twice (reply: TokenList)."""


class CreateToken(Request, frozen=True, tag="tokens-create"):
    """A new token, whose secret only the reply carries (reply: TokenCreated)."""

    name: str
    scope: Scope = "upload"
    projects: tuple[str, ...] = ()  # an upload token limited to these projects; (): all
    expires: float | None = None  # wall-clock time; None: never


class RevokeToken(_Named, frozen=True, tag="tokens-revoke"):
    """Delete a token: it grants nothing from now on (reply: TokenRevoked)."""


class ListProjects(Request, frozen=True, tag="projects-list"):
    """Every hosted project, with its counts (reply: ProjectList)."""


class ShowProject(_Named, frozen=True, tag="projects-show"):
    """The files of one hosted project (reply: ProjectDetail)."""


class SetProjectStatus(Request, frozen=True, tag="projects-status"):
    """Set a hosted project's PEP 792 status (reply: ProjectStatusSet)."""

    name: str
    status: ProjectStatus
    reason: str | None = None


class Yank(_OfVersion, frozen=True, tag="yank"):
    """Mark every file of a version yanked, PEP 592 (reply: YankDone)."""

    reason: str | None = None


class Unyank(_OfVersion, frozen=True, tag="unyank"):
    """Undo a yank (reply: YankDone)."""


class ListMirrors(Request, frozen=True, tag="mirrors-list"):
    """Each mirror target: its state, lag, pending work and error (reply: MirrorList)."""


class SyncMirror(_Named, frozen=True, tag="mirrors-sync"):
    """Compare the whole target with the store and repair it; the reply (MirrorSynced) comes when
    it is done. A target that holds more than the store, or another store's, is refused unless
    `adopt` (another store's target, nothing lost) or `force` (accept the loss) says otherwise."""

    adopt: bool = False
    force: bool = False


class VerifyMirror(_Named, frozen=True, tag="mirrors-verify"):
    """Check every file the target's manifests name by its size and sha256, changing nothing
    (reply: MirrorVerified)."""


class Remove(Request, frozen=True, tag="remove"):
    """Unpublish one file, or every file of a version; `dry_run` says what would go (reply:
    Removed)."""

    project: str
    version: str | None = None
    filename: str | None = None
    dry_run: bool = False


class CacheStatus(Request, frozen=True, tag="cache-status"):
    """Cache mode's file cache: its size, files, hit rate, oldest entry (reply: CacheReport)."""


class PruneCache(Request, frozen=True, tag="cache-prune"):
    """Drop cached upstream files: those last used more than `older_than` seconds ago (None:
    whenever), of the projects `names` (empty: all); reply: CachePruned."""

    older_than: float | None = None
    names: tuple[str, ...] = ()


class FetchCache(Request, frozen=True, tag="cache-fetch"):
    """Fill the file cache ahead of time: for each requirement (a requirements.txt line), the
    newest release it allows, its sdist and wheels (only those for `platforms` and `any`, when
    given) and their metadata; reply: CacheFetched, when every file is in."""

    requirements: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()


# Parts of replies ----------------------------------------------------------------------------


class _Part(msgspec.Struct, frozen=True, kw_only=True):
    pass


class VersionInfo(_Part, frozen=True):
    version: str
    status: str  # published, failed, refused (a rebuild's bytes differed), removed, skipped
    at: float | None = None
    message: str | None = None  # why it failed
    log: str | None = None  # its build log
    attempts: int = 0  # failed attempts in a row
    retry_at: float | None = None  # when the periodic check tries a failed version again


class RepoInfo(_Part, frozen=True):
    name: str  # the distribution name: what `repos remove` and `update` take
    source: str  # OWNER/REPO, the URL, or the path
    kind: str  # github, git, path
    versions: VersionPolicy = "newest"
    since: str | None = None
    publish_to: tuple[str, ...] = ()
    local: bool = True
    added: float = 0.0
    last_check: float | None = None
    newest_tag: str | None = None
    last_published: str | None = None
    last_published_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    log: str | None = None  # the log of the last build or failure
    # What happened to each version the watcher knows of: published, failed, removed, skipped.
    version_states: tuple[VersionInfo, ...] = ()
    tags_seen: int = 0  # tags found by the last listing
    ignored_tags: tuple[str, ...] = ()  # when none of them names a version: the first few
    # Derived by the daemon, the one reading of the record: unchecked, ok, failing, refused,
    # no version tag ("": a daemon before it; the client derives it then).
    state: str = ""


class WatcherInfo(_Part, frozen=True):
    available: bool = False  # False: this daemon has no watcher yet
    state: str = "absent"  # running, paused, absent
    interval: float | None = None  # seconds between periodic checks
    next_check: float | None = None  # wall-clock time
    checking: tuple[str, ...] = ()  # repositories being checked now
    message: str = ""
    # What builds run in: "bubblewrap", "none" (the operator's choice), or "refused: why not".
    sandbox: str = ""


class TokenInfo(_Part, frozen=True):
    name: str
    scope: Scope
    created: float
    projects: tuple[str, ...] = ()  # (): every project
    expires: float | None = None
    last_used: float | None = None


class ProjectInfo(_Part, frozen=True):
    name: str
    versions: int
    files: int
    latest: str | None = None  # the highest version that is not yanked
    size: int = 0
    last_upload: float | None = None
    yanked_files: int = 0
    status: ProjectStatus = "active"
    status_reason: str | None = None


class FileInfo(_Part, frozen=True):
    filename: str
    version: str
    size: int
    sha256: str
    upload_time: float = 0.0
    yanked: bool = False
    yanked_reason: str | None = None
    uploaded_by: str | None = None  # the token's name


class VersionFailure(_Part, frozen=True):
    version: str
    error: str  # never carries the log path: that is `log`
    log: str | None = None
    attempts: int = 1


class RepoOutcome(_Part, frozen=True):
    repo: str
    # published, up-to-date, failed, refused, queued, no-version-tag
    outcome: str
    versions: tuple[str, ...] = ()  # the versions published
    error: str | None = None  # the check's error, or the newest failed version's; no log path
    log: str | None = None
    failures: tuple[VersionFailure, ...] = ()  # every version that failed in this check
    # Rebuilds (--force) refused: their bytes differ from the published files, which stay.
    refused: tuple[VersionFailure, ...] = ()
    message: str | None = None  # e.g. why there is nothing to build
    # The repository's state after the check, as RepoInfo.state (what `repos list` says).
    state: str = ""


class MirrorInfo(_Part, frozen=True):
    name: str
    kind: str  # directory, s3
    location: str
    # idle (current), syncing, comparing (a full comparison runs), failing (retrying), refused
    # (it holds more than the store or is another store's: nothing is written to it), broken
    state: str = "idle"
    lag: float = 0.0  # seconds since the oldest change the target does not show yet
    pending: int = 0  # projects whose changes are not written yet
    full_sync_pending: bool = False
    last_sync: float | None = None  # wall-clock time the target was last current
    last_error: str | None = None
    last_error_at: float | None = None
    next_retry: float | None = None  # wall-clock time of the next attempt, while failing
    requests: int = 0  # operations on the target since the daemon started
    # While refused: the projects it lists that the store does not host, which the index answers
    # 503 instead of falling back to the upstream index (no dependency confusion).
    withheld: int = 0


# Replies -------------------------------------------------------------------------------------


class Clocked(Reply, frozen=True):
    """A reply with times in it, and the daemon's wall clock: "3 min ago" is said by the clock
    of the daemon that wrote the times, not by the client's."""

    now: float = 0.0


class IndexFacts(Reply, frozen=True):
    """The index's side of the daemon: all of `server status`, and the start of `status`."""

    index_urls: tuple[str, ...] = ()
    projects: int = 0
    files: int = 0
    upstream: str | None = None
    upstream_mode: str = "none"
    data_dir: str = ""
    uptime: float = 0.0


class ServerReport(IndexFacts, frozen=True, tag="server-status"):
    pass


class StatusReport(IndexFacts, frozen=True, kw_only=True, tag="status"):
    version: str
    pid: int
    now: float  # the daemon's wall clock, for relative times
    socket: str = ""
    watcher: WatcherInfo = WatcherInfo()
    repos: tuple[RepoInfo, ...] = ()
    # Settings a reload read but cannot apply to the running daemon ("server.port", ...).
    restart_needed: tuple[str, ...] = ()
    mirrors: tuple[MirrorInfo, ...] = ()


class RepoList(Clocked, frozen=True, kw_only=True, tag="repos"):
    repos: tuple[RepoInfo, ...] = ()
    sandbox: str = ""  # what builds run in, as WatcherInfo.sandbox


class RepoAdded(Reply, frozen=True, tag="repo-added"):
    repo: RepoInfo
    checking: bool = False  # a check of it started (False: the watcher is paused)


class RepoChanged(Reply, frozen=True, tag="repo-changed"):
    repo: RepoInfo
    changed: tuple[str, ...] = ()  # the settings that changed: versions, publish_to, local


class RepoRemoved(Reply, frozen=True, tag="repo-removed"):
    repo: RepoInfo


class UpdateReport(Reply, frozen=True, tag="update"):
    results: tuple[RepoOutcome, ...] = ()
    queued: bool = False  # wait=False: the check runs on after this reply


class WatcherReport(Clocked, frozen=True, kw_only=True, tag="watcher"):
    watcher: WatcherInfo


class LogsLocation(Reply, frozen=True, tag="logs"):
    """journal: read with journalctl (unit, user); else `path` is the daemon's log file."""

    journal: bool = False
    unit: str | None = None
    user: bool = False  # a unit of a user's service manager (journalctl --user-unit)
    invocation: str | None = None  # INVOCATION_ID, when no unit name could be found
    path: str | None = None
    builds: str | None = None  # the directory of the build logs: NAME/VERSION.log
    # Asked with `build`: the log to show when the newest version failed (or was refused), and
    # which build that is; None: the newest build's log is shown.
    build_log: str | None = None
    build_said: str | None = None


class Reloaded(Reply, frozen=True, tag="reloaded"):
    # Settings the new file changes that only a restart applies ([server], [paths]).
    restart_needed: tuple[str, ...] = ()
    # Why the TLS certificate files were not loaded (the running certificate stays); the new
    # settings are in force all the same.
    certificate_error: str | None = None


class TokenList(Clocked, frozen=True, kw_only=True, tag="tokens"):
    tokens: tuple[TokenInfo, ...] = ()


class TokenCreated(Reply, frozen=True, tag="token-created"):
    token: TokenInfo
    secret: str  # shown once; only its hash is kept


class TokenRevoked(Reply, frozen=True, tag="token-revoked"):
    name: str


class ProjectList(Clocked, frozen=True, kw_only=True, tag="projects"):
    projects: tuple[ProjectInfo, ...] = ()


class ProjectDetail(Clocked, frozen=True, kw_only=True, tag="project"):
    name: str
    files: tuple[FileInfo, ...] = ()


class ProjectStatusSet(Reply, frozen=True, tag="project-status"):
    name: str
    status: ProjectStatus
    reason: str | None = None


class YankDone(Reply, frozen=True, tag="yanked"):
    project: str
    version: str
    yanked: bool
    changed: int  # files whose state changed (0: they were so already)


class MirrorList(Clocked, frozen=True, kw_only=True, tag="mirrors"):
    mirrors: tuple[MirrorInfo, ...] = ()


class MirrorSynced(Clocked, frozen=True, kw_only=True, tag="mirror-synced"):
    mirror: MirrorInfo
    files: int = 0  # files written
    pages: int = 0  # pages written
    deleted: int = 0  # keys removed (no longer in the store)
    seconds: float = 0.0
    rewritten: int = 0  # files written again: the target held other bytes under their keys


class MirrorDifference(_Part, frozen=True):
    key: str
    problem: str  # missing; or the size and sha256 held, and those recorded


class MirrorVerified(Clocked, frozen=True, kw_only=True, tag="mirror-verified"):
    name: str = ""
    checked: int = 0  # files the manifests name
    differs: tuple[MirrorDifference, ...] = ()


class CacheReport(Clocked, frozen=True, kw_only=True, tag="cache-status"):
    mode: str = "none"  # the upstream mode: only "cache" fills the file cache
    upstream: str | None = None
    directory: str = ""
    size: int = 0  # bytes held
    limit: int = 0  # [upstream] file-cache-size
    files: int = 0
    hits: int = 0  # since the daemon started
    misses: int = 0
    oldest: float | None = None  # wall-clock time the least recently used file was last used


class CachePruned(Reply, frozen=True, tag="cache-pruned"):
    files: int = 0
    size: int = 0


class CacheFetched(Reply, frozen=True, tag="cache-fetched"):
    fetched: int = 0  # files fetched now
    cached: int = 0  # files that were there already
    size: int = 0  # bytes fetched now
    failures: tuple[str, ...] = ()  # one line each: what could not be had, and why


class Removed(Reply, frozen=True, tag="removed"):
    project: str
    files: tuple[str, ...]
    dry_run: bool = False


ClientMessage = (
    Hello
    | Status
    | ServerStatus
    | ListRepos
    | AddRepo
    | RemoveRepo
    | SetRepo
    | Update
    | WatcherControl
    | Logs
    | Reload
    | ListTokens
    | CreateToken
    | RevokeToken
    | ListProjects
    | ShowProject
    | SetProjectStatus
    | Yank
    | Unyank
    | Remove
    | ListMirrors
    | SyncMirror
    | VerifyMirror
    | CacheStatus
    | PruneCache
    | FetchCache
)
ServerMessage = (
    Welcome
    | Error
    | Progress
    | StatusReport
    | ServerReport
    | RepoList
    | RepoAdded
    | RepoRemoved
    | RepoChanged
    | UpdateReport
    | WatcherReport
    | LogsLocation
    | Reloaded
    | TokenList
    | TokenCreated
    | TokenRevoked
    | ProjectList
    | ProjectDetail
    | ProjectStatusSet
    | YankDone
    | Removed
    | MirrorList
    | MirrorSynced
    | MirrorVerified
    | CacheReport
    | CachePruned
    | CacheFetched
)


# -- encoding and decoding ---------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    """Just the tag: tells an unknown message type apart from a malformed one."""

    type: str = ""


_encoder = msgspec.msgpack.Encoder()
_client_decoder: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder: msgspec.msgpack.Decoder[ServerMessage] = msgspec.msgpack.Decoder(ServerMessage)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def encode_frame(message: _Message, limit: int = MAX_FRAME_SIZE) -> bytes:
    """The frame for `message`: length header and msgpack body in one buffer."""
    buffer = bytearray(HEADER.size)
    _encoder.encode_into(message, buffer, HEADER.size)
    size = len(buffer) - HEADER.size
    if size > limit:
        raise FrameTooLarge(size, limit)
    HEADER.pack_into(buffer, 0, size)
    return bytes(buffer)


def decode_client_message(body: bytes) -> ClientMessage:
    """What the daemon receives; raises UnknownMessage or BadMessage (one nested deeper than
    MAX_DEPTH included: the decoder would skip its unknown parts recursively)."""
    if too_deep(body, MAX_DEPTH):
        raise BadMessage(f"a message nested deeper than {MAX_DEPTH} levels")
    return _decode(_client_decoder, body, _CLIENT_TAGS)


def decode_server_message(body: bytes) -> ServerMessage:
    """What the client receives; raises UnknownMessage or BadMessage."""
    return _decode(_server_decoder, body, _SERVER_TAGS)


def _tags(union: object) -> frozenset[str]:
    return frozenset(str(t.__struct_config__.tag) for t in get_args(union))


_CLIENT_TAGS = _tags(ClientMessage)
_SERVER_TAGS = _tags(ServerMessage)
M = TypeVar("M")


def _decode(decoder: msgspec.msgpack.Decoder[M], body: bytes, known: frozenset[str]) -> M:
    """`body` decoded by `decoder`, whose message types are the `known` tags."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise _explain(body, error, known) from None
    except msgspec.DecodeError as error:
        raise BadMessage(f"not a msgpack message: {error}") from None
    except RecursionError:
        # The decoder's own bound, for what too_deep did not check (the daemon's replies).
        raise BadMessage("a message nested too deeply to decode") from None


def _explain(body: bytes, error: msgspec.ValidationError, known: frozenset[str]) -> ProtocolError:
    """A message type that is not known (the peer is newer) told apart from a malformed one."""
    try:
        tag = _envelope_decoder.decode(body).type
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        tag = ""
    if tag and tag not in known:
        return UnknownMessage(tag)
    return BadMessage(f"invalid message: {error}")


class FrameReader:
    """Sans-IO frame splitting: feed bytes as they arrive, take complete frame bodies out.

    The header is checked against the limit as soon as it is complete, before the body is read,
    so an oversized frame costs four bytes of memory, not its announced size.
    """

    def __init__(self, limit: int = MAX_FRAME_SIZE) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None until more bytes arrive."""
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        if size > self.limit:
            raise FrameTooLarge(size, self.limit)
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return body
