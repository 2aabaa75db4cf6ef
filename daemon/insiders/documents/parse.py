"""The upstream's pages read into the page model: PEP 691 JSON and PEP 503 HTML, each link's
hashes, metadata (PEP 658/714) and yank kept; links that cannot be fetched (no http(s)) dropped."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import msgspec

from .model import FileLink, ProjectPage


class _JsonFile(msgspec.Struct, kw_only=True, rename="kebab"):
    filename: str
    url: str
    hashes: dict[str, str] = {}
    requires_python: str | None = None
    yanked: bool | str = False
    core_metadata: bool | dict[str, str] | None = None
    dist_info_metadata: bool | dict[str, str] | None = None
    size: int | None = None
    upload_time: str | None = None


class _JsonProject(msgspec.Struct, kw_only=True):
    name: str
    files: list[_JsonFile]
    versions: list[str] = []


_decode_json_project = msgspec.json.Decoder(_JsonProject).decode


def _metadata_hashes(value: bool | dict[str, str] | None) -> dict[str, str] | None:
    return value if isinstance(value, dict) and value else None


def _fetchable(url: str) -> bool:
    """Only http(s) links are relayed: a garbage or hostile upstream could send javascript:."""
    return urlsplit(url).scheme in ("http", "https")


def _absolute(page_url: str, url: str) -> str | None:
    """A file's URL made absolute, or None when it is not an http(s) link. A public index's
    links are absolute already: they skip urljoin, which was most of the cost of parsing a
    large page (tens of thousands of files)."""
    if url.startswith(("https://", "http://")):
        return url
    joined = urljoin(page_url, url)
    return joined if _fetchable(joined) else None


def parse_json_page(body: bytes, page_url: str, name: str) -> ProjectPage:
    data = _decode_json_project(body)
    files = tuple(
        FileLink(
            filename=f.filename,
            url=url,
            hashes=f.hashes,
            requires_python=f.requires_python,
            yanked=f.yanked,
            core_metadata=_metadata_hashes(f.core_metadata)
            or _metadata_hashes(f.dist_info_metadata),
            size=f.size,
            upload_time=f.upload_time,
        )
        for f in data.files
        if (url := _absolute(page_url, f.url)) is not None
    )
    return ProjectPage(name=name, files=files, versions=tuple(data.versions))


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None


def parse_html_page(body: bytes, page_url: str, name: str) -> ProjectPage:
    parser = _AnchorParser()
    parser.feed(body.decode("utf-8", "replace"))
    files = []
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(page_url, href))
        if not _fetchable(url):
            continue
        algorithm, _, digest = fragment.partition("=")
        metadata = attrs.get("data-core-metadata") or attrs.get("data-dist-info-metadata")
        meta_algorithm, _, meta_digest = (metadata or "").partition("=")
        yanked = attrs.get("data-yanked")
        files.append(
            FileLink(
                filename=text or url.rsplit("/", 1)[-1],
                url=url,
                hashes={algorithm: digest} if digest else {},
                requires_python=attrs.get("data-requires-python"),
                yanked=False if yanked is None else (yanked or True),
                core_metadata={meta_algorithm: meta_digest} if meta_digest else None,
            )
        )
    return ProjectPage(name=name, files=tuple(files), versions=())
