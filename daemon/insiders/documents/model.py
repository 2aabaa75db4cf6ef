"""The page model: a project's files as an index page lists them, hosted or from the upstream.

Rendered as PEP 503 HTML or PEP 691 JSON by insiders.documents.render; read from the upstream by
insiders.index.upstream; made from the store here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from insiders.store import Project, StoredFile


class FileLink(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    url: str
    hashes: dict[str, str]
    requires_python: str | None = None
    yanked: bool | str = False
    # The metadata file's hashes (PEP 658); None when none is served.
    core_metadata: dict[str, str] | None = None
    size: int | None = None
    upload_time: str | None = None


class ProjectPage(msgspec.Struct, frozen=True, kw_only=True, weakref=True):
    name: str
    files: tuple[FileLink, ...]
    versions: tuple[str, ...]
    # PEP 792; None: not known (an upstream page), which clients read as active.
    status: str | None = None
    status_reason: str | None = None


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hosted_link(project_name: str, stored: StoredFile, base: str) -> FileLink:
    """A stored file as a link; `base` is prefixed to /files/... (relative from a project page)."""
    yanked: bool | str = (stored.yanked_reason or True) if stored.yanked else False
    metadata = (
        {"sha256": stored.metadata_sha256} if stored.metadata_sha256 and stored.is_wheel else None
    )
    return FileLink(
        filename=stored.filename,
        url=f"{base}files/{project_name}/{stored.filename}",
        hashes={"sha256": stored.sha256},
        requires_python=stored.requires_python,
        yanked=yanked,
        core_metadata=metadata,
        size=stored.size,
        upload_time=iso_time(stored.upload_time) if stored.upload_time else None,
    )


def hosted_page(project: Project) -> ProjectPage:
    name = project.normalized
    served = project.served_files
    return ProjectPage(
        name=name,
        files=tuple(hosted_link(name, f, "../../") for f in served),
        versions=tuple(project.versions()) if served else (),
        status=project.status,
        status_reason=project.status_reason,
    )


# -- HTML (PEP 503, 592, 629, 658/714) -------------------------------------------------------
