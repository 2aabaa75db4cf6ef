"""Whether a target may be made to match the store (pure): the mirror is a backup you can bet on.

A target's manifests say what it holds and which store wrote it. Before the sync engine writes or
deletes anything in a full comparison, it asks `judge`:

- a target that names a file the store neither holds nor recorded as removed, or a record of a
  project newer than the store's (a higher revision), holds more than the store: the store lost
  data (an empty or older data directory). Making the target match would lose it too;
- a target written from another store (another identity) is someone else's;
- a target with no identity (written before identities, or never) whose manifests the store
  holds entirely is claimed; one that holds more is refused like any other.

Nothing a target says is trusted: the names it gives pass the upload rules (`unsafe_file`)
before a key is made of them.

A refusal is lifted only by the person: `insidersd --restore-from NAME` brings the target's
content back, `insidersctl mirrors sync NAME --adopt` claims another store's target when nothing
would be lost, `--force` makes the target match the store and accepts the loss.

Meanwhile the daemon serves its store, and the names a refused target lists are never looked up
on the upstream index (`withheld`): a team's private name that the store lost would otherwise be
answered by whoever took that name on the public index (dependency confusion).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from insiders.errors import InvalidFilename
from insiders.ingest import check_filename
from insiders.names import NormalizedName, is_valid_name, normalize
from insiders.store import Project, StoredFile

from .layout import RootManifest

Accept = Literal["", "adopt", "force"]


@dataclass(frozen=True)
class Verdict:
    """What a target holds beyond the store, and whose it is."""

    # project -> the files the target names that the store has no record of
    lost: dict[NormalizedName, tuple[str, ...]] = field(default_factory=dict)
    # projects whose record in the target is newer than the store's
    newer: tuple[NormalizedName, ...] = ()
    # the identity the target names when it is not this store's ("" when it names none)
    other_store: str | None = None

    @property
    def holds_more(self) -> bool:
        return bool(self.lost or self.newer)

    def refusal(self, name: str, location: str, accept: Accept) -> str | None:
        """The one line that says why the target is not written, and what to run; None: go on."""
        if accept == "force":
            return None
        restore = f"`insidersd --restore-from {name}`"
        if self.holds_more:
            files = sum(len(f) for f in self.lost.values())
            projects = sorted({*self.lost, *self.newer})
            what = f"{_plural(files, 'file')} of " if files else "newer records of "
            shown = ", ".join(projects[:5]) + (", ..." if len(projects) > 5 else "")
            whose = (
                f", written from another store ({self.other_store[:12]})"
                if self.other_store
                else ""
            )
            return (
                f"mirror {name} ({location}) holds {what}{_plural(len(projects), 'project')} "
                f"this store does not have ({shown}){whose}: nothing is written to it; run "
                f"{restore} on an empty data directory to restore them, or `insidersctl mirrors "
                f"sync {name} --force` to make it match this store and lose them"
            )
        if self.other_store and accept != "adopt":
            return (
                f"mirror {name} ({location}) was written from another store "
                f"({self.other_store[:12]}): nothing is written to it; run `insidersctl mirrors "
                f"sync {name} --adopt` to make it this store's mirror (this store holds all it "
                f"names), or {restore} on an empty data directory"
            )
        return None


def judge(
    root: RootManifest | None,
    held: Mapping[NormalizedName, Project],
    record: Callable[[NormalizedName], Project | None],
    identity: str,
) -> Verdict:
    """Compare the target's manifests (`root`, and each project's as the target holds it) with
    the store (`record(name)`: a project, the tombstone of a removed one, or None)."""
    theirs_id = root.store if root is not None else ""
    other = theirs_id if theirs_id and theirs_id != identity else None
    lost: dict[NormalizedName, tuple[str, ...]] = {}
    newer: list[NormalizedName] = []
    for name, theirs in sorted(held.items()):
        ours = record(name)
        if ours is None:
            if theirs.files:
                lost[name] = tuple(f.filename for f in theirs.files)
            continue
        have = {f.filename: f.sha256 for f in ours.files}
        removed = {r.filename for r in ours.removed}
        missing = tuple(
            f.filename
            for f in theirs.files
            if have.get(f.filename) != f.sha256 and f.filename not in removed
        )
        if missing:
            lost[name] = missing
        # Revisions count one store's changes: another store's say nothing about this one.
        if other is None and theirs.revision > ours.revision:
            newer.append(name)
    return Verdict(lost=lost, newer=tuple(newer), other_store=other)


def withheld(project: str, name: str, *, judged: bool = True) -> str:
    """The answer (503) for a project a refused target lists and the store does not host (or,
    not `judged` yet, one the target lists before its first comparison has judged it)."""
    if not judged:
        return (
            f"{project} is in mirror {name}, which is being compared with this store: it is "
            "not looked up on the upstream index until then; try again in a moment"
        )
    return (
        f"{project} is in mirror {name}, which holds projects this store does not have: it is not "
        f"looked up on the upstream index until a person decides; run `insidersd --restore-from "
        f"{name}` on an empty data directory to restore them, or `insidersctl mirrors sync {name} "
        f"--adopt|--force`"
    )


def withheld_note(count: int) -> str:
    """What the refusal's one line adds: the names that do not fall through meanwhile."""
    if not count:
        return ""
    return (
        f"; meanwhile the {_plural(count, 'project')} it lists that this store does not host "
        f"{'is' if count == 1 else 'are'} answered 503, never from the upstream index"
    )


# -- what a target may name: what an upload could have -----------------------------------------


def is_project_name(name: str) -> bool:
    """A project name as the layout spells it: valid, and normalised."""
    return is_valid_name(name) and normalize(name) == name


def unsafe_file(name: NormalizedName, stored: StoredFile) -> str | None:
    """Why a file a target's manifest names is not one the store could hold (None: it is)."""
    why = unsafe_filename(name, stored.filename)
    if why is not None:
        return why
    for digest in (stored.sha256, stored.metadata_sha256):
        if digest is not None and not _SHA256.fullmatch(digest):
            return f"{stored.filename!r}: {digest!r} is not a sha256"
    return None


def unsafe_filename(name: NormalizedName, filename: str) -> str | None:
    """The upload rules: a wheel or sdist name, spelled the normalised way, of this project."""
    try:
        dist = check_filename(filename)
    except InvalidFilename as error:
        return f"{filename!r}: {error}"
    if dist.name != name:
        return f"{filename!r}: a file of {dist.name}, not of {name}"
    return None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
