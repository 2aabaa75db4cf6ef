"""The Quart side of the index: the pages people read and the JSON API, off the hot path."""

from __future__ import annotations

from html import escape
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from insiders import __version__
from insiders.names import normalize
from insiders.store import Store

from . import jsonapi


def create_web_app(store: Store, upstream_description: str) -> QuartTrio:
    app = QuartTrio("insiders", static_folder=None)

    @app.get("/")
    async def home() -> Response:
        base = request.host_url
        projects = "".join(
            f'<li><a href="/simple/{p.normalized}/">{escape(p.name)}</a> '
            f"({len(p.files)} files)</li>"
            for p in sorted(store.projects.values(), key=lambda p: p.normalized)
        )
        body = f"""<!DOCTYPE html>
<html><head><title>insiders</title></head><body>
<h1>insiders {escape(__version__)}</h1>
<p>A package index. Point your tools at it:</p>
<pre>pip install --index-url {escape(base)}simple/ NAME
export PIP_INDEX_URL={escape(base)}simple/ UV_INDEX_URL={escape(base)}simple/</pre>
<p>Projects not hosted here: {escape(upstream_description)}.</p>
<h2>Hosted projects</h2><ul>{projects or "<li>none yet</li>"}</ul>
</body></html>
"""
        return Response(body, content_type="text/html; charset=utf-8")

    @app.get("/pypi/<name>/json")
    async def project_json(name: str) -> tuple[dict[str, Any], int] | Response:
        return await _json_api(store, name, None)

    @app.get("/pypi/<name>/<version>/json")
    async def release_json(name: str, version: str) -> tuple[dict[str, Any], int] | Response:
        return await _json_api(store, name, version)

    return app


async def _json_api(
    store: Store, name: str, version: str | None
) -> tuple[dict[str, Any], int] | Response:
    project = store.get(normalize(name))
    if project is None:
        return {"message": "Not Found"}, 404
    wanted = version if version is not None else jsonapi.latest(project)
    release = jsonapi.release_files(project, wanted)
    if not release:
        return {"message": f"{project.name} has no version {wanted}"}, 404
    source = jsonapi.metadata_source(release)
    path = trio.Path(store.path(project.normalized, f"{source.filename}.metadata"))
    try:
        metadata: bytes | None = await path.read_bytes()
    except OSError:
        metadata = None
    body = jsonapi.document(
        project, release, metadata, request.host_url, with_releases=version is None
    )
    return body, 200
