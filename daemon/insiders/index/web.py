"""The Quart side of the index: the pages people read and the JSON API, off the hot path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from packaging.metadata import parse_email
from quart import Response
from quart_trio import QuartTrio

from insiders.names import normalize, parse_version
from insiders.store import Project, Store, StoredFile

from .render import iso_time


def create_web_app(store: Store, base_url: Callable[[], str]) -> QuartTrio:
    """The JSON API; its absolute URLs start with `base_url()`, never with the Host header."""
    app = QuartTrio("insiders", static_folder=None)

    @app.get("/pypi/<name>/json")
    async def project_json(name: str) -> tuple[dict[str, Any], int] | Response:
        return await _json_api(store, name, None, base_url())

    @app.get("/pypi/<name>/<version>/json")
    async def release_json(name: str, version: str) -> tuple[dict[str, Any], int] | Response:
        return await _json_api(store, name, version, base_url())

    return app


async def _json_api(
    store: Store, name: str, version: str | None, base: str
) -> tuple[dict[str, Any], int] | Response:
    project = store.get(normalize(name))
    if project is None:
        return {"message": "Not Found"}, 404
    if project.status == "quarantined":
        return {"message": f"{project.name} is quarantined: its files are not served"}, 404
    wanted = version if version is not None else project.latest() or ""
    release = [f for f in project.files if parse_version(f.version) == parse_version(wanted)]
    if not release:
        return {"message": f"{project.name} has no version {wanted}"}, 404
    # Wheels' metadata is the built truth; an sdist's PKG-INFO comes next.
    source = min(release, key=lambda f: not f.is_wheel)
    path = trio.Path(store.path(project.normalized, f"{source.filename}.metadata"))
    try:
        fields, _ = parse_email(await path.read_bytes())
    except OSError:
        fields = {}
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
        "urls": [_file_entry(base, project, f) for f in release],
        "last_serial": 0,
    }
    if version is None:
        body["releases"] = {
            v: [_file_entry(base, project, f) for f in project.files if f.version == v]
            for v in project.versions()
        }
    return body, 200


def _file_entry(base: str, project: Project, stored: StoredFile) -> dict[str, Any]:
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
