"""Simple API pages as bytes: PEP 503 HTML and PEP 691 JSON (PEPs 592, 629, 658/714, 700, 792).

Pure functions of a page model, so that hosted projects, upstream projects and merged ones render
through one path, and tests can check them with tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

import msgspec

from insiders.names import normalize

from .model import ProjectPage

# 1.4: the version that brought project status markers (PEP 792), the newest field served here.
API_VERSION = "1.4"


_HTML_HEAD = (
    "<!DOCTYPE html>\n<html>\n  <head>\n"
    f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
    "{meta}    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
)
_HTML_TAIL = "  </body>\n</html>\n"


def root_html(names: Iterable[str]) -> bytes:
    parts = [_HTML_HEAD.format(title="Simple index", meta="")]
    for name in names:
        n = escape(normalize(name))
        parts.append(f'    <a href="{n}/">{escape(name)}</a><br>\n')
    parts.append(_HTML_TAIL)
    return "".join(parts).encode()


def project_html(page: ProjectPage) -> bytes:
    title = escape(f"Links for {page.name}")
    meta = ""
    if page.status is not None:
        meta = f'    <meta name="pypi:project-status" content="{escape(page.status)}">\n'
        if page.status_reason:
            reason = escape(page.status_reason)
            meta += f'    <meta name="pypi:project-status-reason" content="{reason}">\n'
    parts = [_HTML_HEAD.format(title=title, meta=meta)]
    for link in page.files:
        fragment = f"#{_first_hash(link.hashes)}" if link.hashes else ""
        attrs = [f'href="{escape(link.url)}{fragment}"']
        if link.requires_python:
            attrs.append(f'data-requires-python="{escape(link.requires_python)}"')
        if link.yanked is not False:
            reason = link.yanked if isinstance(link.yanked, str) else ""
            attrs.append(f'data-yanked="{escape(reason)}"')
        if link.core_metadata:
            value = escape(_first_hash(link.core_metadata))
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        parts.append(f"    <a {' '.join(attrs)}>{escape(link.filename)}</a><br>\n")
    parts.append(_HTML_TAIL)
    return "".join(parts).encode()


def _first_hash(hashes: dict[str, str]) -> str:
    algorithm = "sha256" if "sha256" in hashes else next(iter(hashes))
    return f"{algorithm}={hashes[algorithm]}"


# -- JSON (PEP 691, 700, 714) ----------------------------------------------------------------

_json = msgspec.json.Encoder()


def root_json(names: Iterable[str]) -> bytes:
    return _json.encode(
        {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]}
    )


def project_json(page: ProjectPage) -> bytes:
    files: list[dict[str, Any]] = []
    for link in page.files:
        entry: dict[str, Any] = {
            "filename": link.filename,
            "url": link.url,
            "hashes": link.hashes,
            "requires-python": link.requires_python,
            "yanked": link.yanked,
        }
        if link.core_metadata:
            # PEP 714: JSON carries only the new key. pip 22.3 to 23.1 (Debian 12's is 23.0.1)
            # crash on the old one's dict value ("unhashable type: 'dict'").
            entry["core-metadata"] = link.core_metadata
        if link.size is not None:
            entry["size"] = link.size
        if link.upload_time is not None:
            entry["upload-time"] = link.upload_time
        files.append(entry)
    body: dict[str, Any] = {
        "meta": {"api-version": API_VERSION},
        "name": page.name,
        "versions": list(page.versions),
        "files": files,
    }
    if page.status is not None:
        status = {"status": page.status}
        if page.status_reason:
            status["reason"] = page.status_reason
        body["project-status"] = status
    return _json.encode(body)
