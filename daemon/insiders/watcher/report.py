"""What the watcher tells the rest of the daemon: a check's steps, its outcome, its own state.

These are the watcher's types, not the control protocol's: insiders.control.commands alone
translates them for insidersctl (its "watcher" section), so the watcher never depends on the
client's package and the protocol can change without the watcher knowing. Their fields bear the
protocol's names, so that translation is a copy by name. Here too is the one translation of a
step's expected errors into the failure of a version or of a check (`step_failures`,
`publish_failures`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import trio

from insiders.errors import (
    BuildError,
    CheckFailed,
    GitError,
    IngestError,
    PublishError,
    StoreError,
    Translate,
    map_exceptions,
)

Stage = Literal[
    "queued",  # waiting for a check slot, or for this repository's running check
    "waiting",  # listed and fetched, waiting for a build slot
    "listing",
    "fetching",
    "building",
    "publishing",
    "unchanged",
    "done",
    "failed",
    "refused",
    "up-to-date",
    "no-version-tag",
]
Ending = Literal["published", "up-to-date", "failed", "refused", "no-version-tag"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a repository's check, as it happens."""

    repo: str
    stage: Stage
    message: str = ""
    version: str | None = None
    log: str | None = None  # the build log, when there is one
    time: float = 0.0  # wall-clock time


Progress = Callable[[Step], None]


class Say(Protocol):
    """Report a step of the repository being checked (the check fills in the repository)."""

    def __call__(
        self, stage: Stage, message: str = "", *, version: str | None = None, log: str | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class VersionFailure:
    """A version that failed (or was refused) in this check; the others went on."""

    version: str
    error: str  # never the log path: that is `log`
    log: str | None = None
    attempts: int = 1  # failed attempts in a row, this one included


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one repository's check ended."""

    repo: str
    outcome: Ending
    versions: tuple[str, ...] = ()  # the versions published
    error: str | None = None  # the check's error, or its newest failed version's
    log: str | None = None
    failures: tuple[VersionFailure, ...] = ()
    # Rebuilds whose bytes differ from the published files (`update --force`): refused, kept.
    refused: tuple[VersionFailure, ...] = ()
    message: str | None = None  # e.g. why there was nothing to build
    # The repository's state as recorded after the check (insiders.repos.status): what
    # `repos list` says, e.g. still "failing" when this check published another version.
    state: str = ""


@dataclass(frozen=True, slots=True)
class WatcherState:
    """The watcher as `insidersctl status` and `systemctl status` show it."""

    state: Literal["running", "paused"]
    interval: float  # seconds between periodic checks
    next_check: float | None  # wall-clock time; None while paused
    checking: tuple[str, ...]  # the repositories being checked now
    sandbox: str  # what builds run in (bubblewrap, none) or why they are refused


def step_failures(
    log_path: Path | None = None, *, too_slow: str = ""
) -> AbstractContextManager[None]:
    """Within: the expected errors of a step (git's, the build's, another index's, and the deadline
    when `too_slow` words it) become a CheckFailed carrying the build log, if any."""

    def failed(error: BaseException) -> CheckFailed:
        return CheckFailed(str(error), log_path)

    translate: Translate = {GitError: failed, BuildError: failed, PublishError: failed}
    if too_slow:
        translate = {**translate, trio.TooSlowError: lambda _: CheckFailed(too_slow, log_path)}
    return map_exceptions(translate)


def publish_failures(filename: str, log_path: Path) -> AbstractContextManager[None]:
    """Within: the store's refusal of a built file (not a distribution we publish, a conflict, a
    closed project) becomes the version's CheckFailed."""

    def refused(error: BaseException) -> CheckFailed:
        return CheckFailed(f"publishing {filename}: {error}", log_path)

    return map_exceptions({IngestError: refused, StoreError: refused})
