"""The JSON API documents (`/pypi/NAME/json`, `/pypi/NAME/VERSION/json`) as pure functions.

The daemon answers them per request and the mirror writes them as files: both build them here, so a
mirror serves the same documents the daemon does. `base` is prefixed to every URL inside (the
daemon's own address, or where a mirror is published).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from packaging.metadata import parse_email

from insiders.documents.model import iso_time
from insiders.store import Project, StoredFile


def metadata_source(release: Sequence[StoredFile]) -> StoredFile:
    """Whose metadata describes the release: a wheel's is the built truth, then an sdist's."""
    return min(release, key=lambda f: not f.is_wheel)


def document(
    project: Project,
    release: Sequence[StoredFile],
    metadata: bytes | None,
    base: str,
    *,
    with_releases: bool,
) -> dict[str, Any]:
    """The document of one release; `with_releases` adds every version (/pypi/NAME/json)."""
    fields: Any = parse_email(metadata)[0] if metadata is not None else {}
    info: dict[str, Any] = {
        "name": project.name,
        "version": release[0].version,
        "summary": fields.get("summary"),
        "description": fields.get("description"),
        "description_content_type": fields.get("description_content_type"),
        "author": fields.get("author"),
        "author_email": fields.get("author_email"),
        "license": fields.get("license"),
        "keywords": fields.get("keywords"),
        "classifiers": fields.get("classifiers", []),
        "requires_python": fields.get("requires_python"),
        "requires_dist": fields.get("requires_dist"),
        "project_urls": fields.get("project_urls"),
        "home_page": fields.get("home_page"),
        "yanked": all(f.yanked for f in release),
        "yanked_reason": next((f.yanked_reason for f in release if f.yanked_reason), None),
        # The web pages (index/ui), as on the public index.
        "package_url": f"{base}project/{project.normalized}/",
        "project_url": f"{base}project/{project.normalized}/",
        "release_url": f"{base}project/{project.normalized}/{release[0].version}/",
    }
    body: dict[str, Any] = {
        "info": info,
        "urls": [file_entry(base, project, f) for f in release],
        "last_serial": 0,
    }
    if with_releases:
        by_version: dict[str, list[StoredFile]] = {}
        for stored in project.files:  # once: a project may have thousands of versions
            by_version.setdefault(stored.version, []).append(stored)
        body["releases"] = {
            v: [file_entry(base, project, f) for f in by_version[v]] for v in project.versions()
        }
    return body


def file_entry(base: str, project: Project, stored: StoredFile) -> dict[str, Any]:
    return {
        "filename": stored.filename,
        "url": f"{base}files/{project.normalized}/{stored.filename}",
        "digests": {
            "sha256": stored.sha256,
            "md5": stored.md5,
            "blake2b_256": stored.blake2b_256,
        },
        "md5_digest": stored.md5,
        "size": stored.size,
        "packagetype": "bdist_wheel" if stored.is_wheel else "sdist",
        "python_version": _python_tag(stored),
        "requires_python": stored.requires_python,
        "upload_time": iso_time(stored.upload_time)[:19],
        "upload_time_iso_8601": iso_time(stored.upload_time),
        "yanked": stored.yanked,
        "yanked_reason": stored.yanked_reason,
        # The name of the token that uploaded it (never its secret); None for the watcher's.
        "uploaded_by": stored.uploaded_by,
    }


def _python_tag(stored: StoredFile) -> str:
    if not stored.is_wheel:
        return "source"
    parts = stored.filename[: -len(".whl")].split("-")
    return parts[-3] if len(parts) >= 5 else "py3"
