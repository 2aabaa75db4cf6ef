"""Every exception insidersd raises on purpose, under one base; each message is for a person.

The tree (the module that raises each in brackets):

    InsidersError
    ├── ConfigError              a setting, file or flag that cannot be used [config, tls, app]
    ├── SocketActivationError    LISTEN_FDS handed over something unusable [systemd]
    ├── ControlSocketError       the control socket cannot be set up [control]; also an OSError
    │   └── AlreadyRunning       another insidersd answers on it
    ├── ControlConnectionEnded   why the control server closes a connection [control.server]
    │   ├── Reclaimed            an idle connection's slot went to a newcomer
    │   └── Stalled              a frame began and did not end in time
    ├── IngestError              a file that is not a distribution we publish [ingest]
    │   ├── InvalidFilename      not a wheel or sdist name [names]; also a ValueError
    │   ├── InvalidDistribution  the archive or its core metadata is wrong [distributions]
    │   └── NotAsClaimed         not the project, version or digests it came with [ingest]
    ├── StoreError               a change the store refuses [store]
    │   ├── FileConflict         that file, or that release, is there with other bytes
    │   │   └── ReleaseDiffers   a file of the release is published with other bytes
    │   ├── VersionRemoved       a build of a version removed, which nobody asked back
    │   └── ProjectClosed        the project is archived or quarantined (PEP 792)
    ├── TokenError               a token change the token file refuses [tokens]
    ├── TokenRefused             credentials that do not grant what a request asks [tokens]
    ├── MalformedCredentials     an Authorization header that does not decode [http.access]
    ├── RepoError                a change the repository registry refuses [repos]
    │   └── SpecError            a SPEC that names no repository; also a ValueError
    ├── UpstreamError            the upstream index cannot be asked [index.upstream]
    │   └── HashMismatch         its bytes are not those its page announced [index.upstreamfiles]
    ├── UpstreamLoop             the upstream is this very index; also a ValueError
    ├── GitError                 a git command failed [watcher.git]
    ├── BuildError               a build failed or made the wrong files [watcher.builder]
    │   └── NoSandbox            builds need a sandbox and none can be made [watcher.sandbox]
    ├── PublishError             another index refused a built file [watcher.other_indexes]
    ├── CheckFailed              one version's (or one check's) expected failure [watcher]
    │   └── NotReproducible      a rebuild whose bytes differ from the published files [watcher]
    ├── NotTagged                `update --version` names a version no tag names [watcher]
    ├── TargetError              a mirror target refused or is unreachable [mirror.targets]
    ├── MirrorRefused            a target holds what the store does not: not written [mirror.sync]
    ├── ProjectChanged           a file left the store mid-copy: pending again [mirror.sync]
    ├── RestoreError             the store cannot be restored from a target [mirror.restore]
    ├── UnfinishedRestore        the data directory holds a restore cut short [mirror.restore]
    └── Refusal                  what a boundary answers with (an HTTP status, a control code)
        ├── UploadRefused        the upload API's answer to twine and `uv publish` [index.upload]
        ├── HookRefused          a webhook's answer [index.hooks]
        └── ControlRefused       an Error reply to insidersctl [commands]

Errors are translated once, where they cross a boundary: the HTTP layer words store and ingest
errors for twine, `Commands.handle` turns them into Error replies, the watcher records them as a
version's failure (`map_exceptions` below), and `__main__` turns start-up errors into an exit
status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol


class InsidersError(Exception):
    """Anything insidersd refuses or fails at on purpose; the message is meant for a person."""


class ConfigError(InsidersError):
    """A configuration that cannot be used; the message names the file and the key."""


class SocketActivationError(InsidersError):
    """LISTEN_FDS handed over something unusable (a malformed count, a file that is no socket)."""


class ControlSocketError(InsidersError, OSError):
    """The control socket cannot be set up; the message says where and why.

    An OSError, so that insidersd reports it as "cannot start: ..." without a traceback.
    """


class AlreadyRunning(ControlSocketError):
    def __init__(self, pid: int | None, path: Path) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"insidersd is already running, {who} (control socket {path})")
        self.pid = pid


class IngestError(InsidersError):
    """A file that cannot be published; the message says what is wrong with it."""


class InvalidFilename(IngestError, ValueError):
    """A filename that is not a wheel or sdist name packaging accepts."""


class InvalidDistribution(IngestError, ValueError):
    """The file is not a distribution we can publish; the message says what is wrong."""


class NotAsClaimed(IngestError):
    """The file is not what its sender said: another project or version, or other digests."""


class StoreError(InsidersError):
    """An operation the store refuses; the message says why."""


class FileConflict(StoreError):
    """A file of that name is stored already, with other content."""


class ReleaseDiffers(FileConflict):
    """A file of a release is published with other bytes: a published file never changes."""

    def __init__(self, filename: str, published: str, offered: str) -> None:
        super().__init__(
            f"File already exists: {filename} is stored with another content (sha256 "
            f"{published}); a published file never changes, upload it under a new version"
        )
        self.filename = filename
        self.published = published  # sha256
        self.offered = offered


class VersionRemoved(StoreError):
    """A version removed from the index is not published again unless a person asks."""


class ClosedProject(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def normalized(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def status_reason(self) -> str | None: ...


class ProjectClosed(StoreError):
    """The project is archived or quarantined (PEP 792): it takes no new files."""

    def __init__(self, project: ClosedProject) -> None:
        reason = f" ({project.status_reason})" if project.status_reason else ""
        super().__init__(
            f"Project {project.name} is {project.status}{reason}: it takes no new files "
            f"(insidersctl projects status {project.normalized} active reopens it)"
        )


class ControlConnectionEnded(InsidersError):
    """Why the control server closes a connection that broke no rule of the protocol."""


class Reclaimed(ControlConnectionEnded):
    """An idle connection's slot went to a newcomer."""


class Stalled(ControlConnectionEnded):
    """A frame began and did not end within `Limits.frame`."""


class TokenError(InsidersError):
    """A token change that is refused (a name taken, an unknown name)."""


class TokenRefused(InsidersError):
    """A secret that does not grant what was asked; the message says why, without the secret."""

    def __init__(self, message: str, *, known: bool) -> None:
        super().__init__(message)
        self.message = message
        # False: no token has this secret (clients should ask for credentials again).
        self.known = known


class MalformedCredentials(InsidersError):
    """An Authorization: Basic header that does not decode (its content is never quoted)."""


class RepoError(InsidersError):
    """A change the repository registry refuses (unknown name, already watched)."""


class SpecError(RepoError, ValueError):
    """A SPEC that names no repository; the message says what is wrong and how to write it."""


class UpstreamError(InsidersError):
    """The upstream could not be asked and no copy of the page is at hand."""


class HashMismatch(UpstreamError):
    """The upstream's bytes are not those its page announced: never kept, never completed."""


class UpstreamLoop(InsidersError, ValueError):
    """The upstream is this very index: every miss would ask itself."""


class GitError(InsidersError):
    """A git command failed; the message is safe to log and to show."""


class BuildError(InsidersError):
    """The build failed, timed out, or made something other than what was asked for."""


class NoSandbox(BuildError):
    """Builds need a sandbox and none can be made here; `reason` is why, in bwrap's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"builds run in a sandbox, and bubblewrap cannot make one here: {reason}. "
            "Install it (apt install bubblewrap) and allow unprivileged user namespaces, or "
            'set [watcher] sandbox = "none" to run watched repositories\' code with the '
            "daemon's authority"
        )
        self.reason = reason


class PublishError(InsidersError):
    """Another index (a [targets.NAME]) refused a file or could not be reached."""


class CheckFailed(InsidersError):
    """An expected failure of a check or of one version; the message never carries the log path."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


class NotReproducible(CheckFailed):
    """A rebuild of a published version made other bytes: refused (a published file never
    changes), and recorded as the version's own state, not as a failure to retry."""


class NotTagged(InsidersError):
    """`update --version V` asks for a version no tag names: the request is refused, and the
    repository is not failing for it."""


class TargetError(InsidersError):
    """A mirror target refused or could not be reached; the message says which and why."""


class MirrorRefused(InsidersError):
    """A target that holds more than the store, or belongs to another store: the daemon writes
    nothing to it until told (`insidersctl mirrors sync NAME --adopt` or `--force`); the message
    says what to run."""


class ProjectChanged(InsidersError):
    """A file vanished from the store mid-copy: the project changed and is pending again."""


class RestoreError(InsidersError):
    """The target cannot be restored from; the message says why."""


class UnfinishedRestore(InsidersError):
    """The data directory holds a restore that did not finish: serving it would serve, and
    mirror, part of a store. The message says what to run."""


class Refusal(InsidersError):
    """The answer a boundary gives: an HTTP status, or a control reply's code."""


class UploadRefused(Refusal):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class HookRefused(Refusal):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlRefused(Refusal):
    """Raised by a control handler: answered as an Error reply with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Translate = Mapping[type[BaseException], Callable[[BaseException], BaseException]]


@contextmanager
def map_exceptions(translate: Translate) -> Iterator[None]:
    """Raise the translation of the first matching kind instead (its cause dropped: the message
    says it all), as httpx maps transport errors at its boundary."""
    try:
        yield
    except BaseException as error:
        for kind, make in translate.items():
            if isinstance(error, kind):
                raise make(error) from None
        raise


def single_error(error: BaseException) -> BaseException:
    """The one exception an exception group holds (nested groups too), else the error itself: a
    refusal raised inside a nursery arrives wrapped."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
