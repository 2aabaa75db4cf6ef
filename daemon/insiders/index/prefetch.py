"""`insidersctl cache fetch`: fill cache mode's file cache ahead of time, for machines offline.

Each requirement (a requirements.txt line: `name`, `name==1.2`, `name>=1,<2`, extras and markers
allowed and ignored) selects one release on the upstream's page, the newest its specifier allows
(yanked ones only when pinned with ==), as an installer would; its sdist and wheels are fetched
and verified as a client's request would fetch them, with their PEP 658 metadata. `platforms`
keeps only the wheels for those platform tags (and `any`): a team fetches for the machines it has.
No dependency is resolved: give the whole list (the output of `pip freeze`, `uv pip compile`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from insiders.documents.model import FileLink, ProjectPage
from insiders.errors import InvalidFilename, UpstreamError
from insiders.names import NormalizedName, normalize, parse_dist_filename

from .upstream import Upstream
from .upstreamfiles import METADATA, UpstreamFiles, wanted


@dataclass
class Prefetched:
    fetched: int = 0  # files fetched now
    cached: int = 0  # files that were there already
    size: int = 0  # bytes fetched now
    failures: list[str] = field(default_factory=list)


def parse_requirement(line: str) -> Requirement | None:
    """A requirements.txt line as a requirement; None for blanks, comments and options."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith(("#", "-")):
        return None
    try:
        return Requirement(text)
    except InvalidRequirement as error:
        raise UpstreamError(f"{text!r}: not a requirement ({error})") from None


def release(page: ProjectPage, requirement: Requirement) -> list[FileLink]:
    """The files of the newest release on the page that the requirement allows."""
    pinned = any(spec.operator in ("==", "===") for spec in requirement.specifier)
    releases: dict[Version, list[FileLink]] = {}
    for link in page.files:
        if link.yanked and not pinned:
            continue
        try:
            version = parse_dist_filename(link.filename).version
        except InvalidFilename:
            continue
        releases.setdefault(version, []).append(link)
    allowed = list(requirement.specifier.filter(releases))
    return releases[max(allowed)] if allowed else []


def for_platforms(link: FileLink, platforms: frozenset[str]) -> bool:
    if not platforms or not link.filename.endswith(".whl"):
        return True
    tags = parse_dist_filename(link.filename).tags
    return any(tag.platform == "any" or tag.platform in platforms for tag in tags)


async def prefetch(
    files: UpstreamFiles, upstream: Upstream, lines: list[str], platforms: frozenset[str]
) -> Prefetched:
    """Long because each requirement can fail in its own way, reported, while the others go on:
    fetch what every requirement selects into the cache."""
    done = Prefetched()
    for line in lines:
        try:
            requirement = parse_requirement(line)
            if requirement is None:
                continue
            name: NormalizedName = normalize(requirement.name)
            page = await upstream.page(name)
        except UpstreamError as error:
            done.failures.append(str(error))
            continue
        if page is None:
            done.failures.append(f"{name}: no such project upstream")
            continue
        chosen = [f for f in release(page, requirement) if for_platforms(f, platforms)]
        if not chosen:
            done.failures.append(f"{requirement}: no release upstream matches")
            continue
        filenames = [f.filename for f in chosen]
        filenames += [f"{f.filename}{METADATA}" for f in chosen if f.core_metadata]
        for filename in filenames:
            want = wanted(page, filename)
            if want is None:
                continue
            if isinstance(want, str):
                done.failures.append(f"{name}/{filename}: {want}")
                continue
            try:
                size = await files.fetch_ahead(upstream, name, filename, want)
            except UpstreamError as error:
                done.failures.append(f"{name}/{filename}: {error}")
                continue
            if size is None:
                done.cached += 1
            else:
                done.fetched += 1
                done.size += size
    return done
