"""Download the pinned sdists of tests/real-sources.txt: `python -m tests.fetch_sources LIST DEST`.

`pip download --no-binary :all:` cannot fetch an sdist without running its build backend (it
prepares the metadata to check the name and version), and that build would run on this machine,
with the backend the sdist asks for. The real-backends test wants the published archives only, so
they are read from the index this machine's pip uses (as insidersd finds its upstream) and checked
against the sha256 pinned in the list: no code of theirs runs here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from insiders.index.upstream import pip_index_url

ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"


def pinned(line: str) -> tuple[str, str, str] | None:
    """(name, version, sha256) of a line `NAME==VERSION --hash=sha256:HEX`; None for a comment."""
    words = shlex.split(line, comments=True)
    if not words:
        return None
    name, _, version = words[0].partition("==")
    digests = [w.removeprefix("--hash=sha256:") for w in words[1:] if w.startswith("--hash=")]
    if not version or len(digests) != 1:
        raise ValueError(f"expected NAME==VERSION --hash=sha256:HEX, not {line!r}")
    return name, version, digests[0]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(href)


def sdist_url(index: str, name: str, version: str) -> str:
    """The URL of NAME-VERSION.tar.gz on the project's page of `index` (PEP 691 or PEP 503)."""
    project = re.sub(r"[-_.]+", "-", name).lower()
    page = urllib.parse.urljoin(index.rstrip("/") + "/", f"{project}/")
    request = urllib.request.Request(page, headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60) as response:
        kind = response.headers.get_content_type()
        body = response.read().decode()
        page = response.url
    if kind == "application/vnd.pypi.simple.v1+json":
        links = [(f["filename"], f["url"]) for f in json.loads(body)["files"]]
    else:
        parser = _Links()
        parser.feed(body)
        links = [(urllib.parse.urlsplit(h).path.rsplit("/", 1)[-1], h) for h in parser.links]
    # The spec spells an sdist's name normalised with underscores; older uploads kept the
    # project's own spelling.
    stems = {f"{project.replace('-', '_')}-{version}", f"{name}-{version}"}
    for filename, url in links:
        if filename.removesuffix(".tar.gz") in stems and filename.endswith(".tar.gz"):
            return str(urllib.parse.urljoin(page, url))
    raise LookupError(f"{page} lists no sdist of {name} {version}")


def fetch(index: str, name: str, version: str, sha256: str, dest: Path) -> Path:
    url = sdist_url(index, name, version)
    target = dest / urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    if (digest := hashlib.sha256(data).hexdigest()) != sha256:
        raise ValueError(f"{url}: sha256 {digest}, but the list pins {sha256}")
    temp = target.with_name(f".{target.name}.part")
    temp.write_bytes(data)
    os.replace(temp, target)
    return target


def main(argv: list[str]) -> int:
    listing, dest = Path(argv[0]), Path(argv[1])
    index = pip_index_url()
    if index is None:
        print("cannot tell which index pip uses", file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for line in listing.read_text().splitlines():
        if (pin := pinned(line)) is not None:
            print(fetch(index, *pin, dest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
