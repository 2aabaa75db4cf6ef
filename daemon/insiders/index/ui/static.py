"""The stylesheet and the small script, served by the daemon itself (nothing from another host).

They are read once from the package and served with a content hash in their URL, so a browser
keeps them for good and a new release of insiders still reaches every reader at once.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import msgspec

from insiders.documents.page import Page, make_page

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


class StaticFile(msgspec.Struct, frozen=True):
    page: Page
    content_type: str
    digest: str


class StaticFiles:
    def __init__(self, files: dict[str, StaticFile]) -> None:
        self.files = files

    @classmethod
    def load(cls) -> StaticFiles:
        files = {}
        for entry in resources.files("insiders.index.ui").joinpath("static").iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if suffix not in CONTENT_TYPES:
                continue
            data = entry.read_bytes()
            digest = hashlib.blake2b(data, digest_size=8).hexdigest()
            files[entry.name] = StaticFile(make_page(data), CONTENT_TYPES[suffix], digest)
        return cls(files)

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.files[name].digest}"

    def get(self, name: str) -> StaticFile | None:
        return self.files.get(name)
