"""A watched repository's state in one word, derived from its record, and only here.

`insidersctl repos list`, `status` and its overview, the web pages and `--json` all say what
`repo_status` says, so they cannot disagree: the record (insiders.repos.registry.RepoState) is the
one truth, and this is the one reading of it. Pure.
"""

from __future__ import annotations

from typing import Literal

from .registry import RepoState

Status = Literal["unchecked", "ok", "failing", "refused", "no version tag"]


def repo_status(state: RepoState) -> Status:
    """failing: its own error (listing, fetching) or a version whose last build failed; refused:
    a rebuild's bytes differed from the published files (nothing is retried); no version tag: the
    last listing found none; unchecked: never checked yet."""
    statuses = {record.status for record in state.versions.values()}
    if state.last_error or "failed" in statuses:
        return "failing"
    if "refused" in statuses:
        return "refused"
    if state.last_check is None:
        return "unchecked"
    if not state.newest_tag:
        return "no version tag"
    return "ok"
