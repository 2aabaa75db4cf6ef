"""The Quart side of the index: the pages people read and the JSON API, off the hot path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio

from insiders.documents import jsonapi
from insiders.names import normalize
from insiders.store import Store


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
    release = project.files_of(wanted)
    if not release:
        return {"message": f"{project.name} has no version {wanted}"}, 404
    source = jsonapi.metadata_source(release)
    path = trio.Path(store.path(project.normalized, f"{source.filename}.metadata"))
    try:
        metadata: bytes | None = await path.read_bytes()
    except OSError:
        metadata = None
    body = jsonapi.document(project, release, metadata, base, with_releases=version is None)
    return body, 200
