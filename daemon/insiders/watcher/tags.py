"""Version tags: which tags of a repository are versions, and which of them to build. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from packaging.version import InvalidVersion, Version

# Insiders forks tag their releases like `9.5.17-insiders-4.53.6`, which is not PEP 440 but reads
# naturally as the public version plus a local label: 9.5.17+insiders.4.53.6.
_PUBLIC_DASH_LOCAL = re.compile(
    r"^(\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?)-([0-9A-Za-z]+(?:[-.][0-9A-Za-z]+)*)$"
)


def tag_version(tag: str) -> Version | None:
    """The version a tag names, after an optional `v`; None for tags that are not versions."""
    text = tag.removeprefix("refs/tags/")
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    if not text[:1].isdigit():
        return None
    try:
        return Version(text)
    except InvalidVersion:
        pass
    match = _PUBLIC_DASH_LOCAL.match(text)
    if match:
        try:
            return Version(f"{match[1]}+{match[2].replace('-', '.')}")
        except InvalidVersion:
            return None
    return None


def parse_ls_remote(output: str) -> dict[str, str]:
    """`git ls-remote --tags --refs` output -> {tag name: commit sha}."""
    tags = {}
    for line in output.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/tags/") and sha:
            tags[ref.removeprefix("refs/tags/")] = sha.strip()
    return tags


def version_tags(tags: Iterable[str]) -> dict[Version, str]:
    """Versions -> tag names; when two tags name one version (v1.0, 1.0) the first sorted wins."""
    versions: dict[Version, str] = {}
    for tag in sorted(tags):
        version = tag_version(tag)
        if version is not None and version not in versions:
            versions[version] = tag
    return versions


def to_build(
    versions: Mapping[Version, str],
    *,
    published: Iterable[Version],
    first_check: bool,
    select: str = "latest",
    since: Version | None = None,
    include_prereleases: bool = True,
) -> list[Version]:
    """The versions to build now, oldest first.

    On the first check of a repository only the newest version is built (or all, or all since one
    version, as the user chose); afterwards every version not published yet.
    """
    done = set(published)
    candidates = sorted(v for v in versions if include_prereleases or not v.is_prerelease)
    if since is not None:
        candidates = [v for v in candidates if v >= since]
    if first_check and select == "latest" and since is None:
        candidates = candidates[-1:]
    return [v for v in candidates if v not in done]
