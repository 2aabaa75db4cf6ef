"""An upstream index for the cache-mode tests: a static PEP 691 tree behind Debian's nginx.

The tests write its pages and files (and can make a page announce other bytes than the file it
links), nginx serves them, and its access log counts what the daemon asked. `slow-*` projects'
files are sent at a limited rate, so that a fetch is still running while other requests arrive,
and `norange-*` projects' files are served without ranges.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

from tests.fronts import Nginx, free_port

SLOW_RATE = "256k"  # bytes per second for the files of projects named slow-*


def metadata_of(wheel: bytes | Path) -> bytes:
    """A wheel's METADATA file, as PEP 658 serves it beside the wheel."""
    source = wheel if isinstance(wheel, Path) else io.BytesIO(wheel)
    with zipfile.ZipFile(source) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


class StaticUpstream:
    def __init__(self, where: Path, hung: str | None = None) -> None:
        """`hung`: a server that never answers, behind the pages of `hung-*` projects."""
        self.where = where
        self.tree = where / "tree"
        self.port = free_port()
        self.files: dict[str, list[dict[str, object]]] = {}
        site = f"""\
server {{
    listen 127.0.0.1:{self.port};
    root {self.tree};
    access_log {where}/access.log;
    location /simple/ {{
        types {{ }}
        default_type application/vnd.pypi.simple.v1+json;
        index index.json;
    }}
    location /files/ {{
        types {{ }}
        default_type application/octet-stream;
    }}
    location /files/slow- {{
        types {{ }}
        default_type application/octet-stream;
        limit_rate {SLOW_RATE};
    }}
    {f"location /simple/hung- {{ proxy_pass {hung}; proxy_read_timeout 300s; }}" if hung else ""}
    location /files/norange- {{
        types {{ }}
        default_type application/octet-stream;
        max_ranges 0;
    }}
}}
"""
        self.nginx = Nginx(where / "nginx", site, port=self.port)

    @property
    def index(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def start(self) -> StaticUpstream:
        self.tree.mkdir(parents=True, exist_ok=True)
        self.nginx.start()
        return self

    def stop(self) -> None:
        self.nginx.stop()

    def add(
        self,
        name: str,
        filename: str,
        data: bytes,
        *,
        announce: bytes | None = None,
        metadata: bytes | None = None,
        size: bool = True,
    ) -> str:
        """Publish a file (and its PEP 658 metadata); the page announces the sha256 of `announce`
        when given, of `data` otherwise, and its size (PEP 700) unless not `size`. The
        file's path on the upstream."""
        folder = self.tree / "files" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(data)
        entry: dict[str, object] = {
            "filename": filename,
            "url": f"../../files/{name}/{filename}",
            "hashes": {"sha256": hashlib.sha256(announce or data).hexdigest()},
        }
        if size:
            entry["size"] = len(announce or data)
        if metadata is not None:
            (folder / f"{filename}.metadata").write_bytes(metadata)
            entry["core-metadata"] = {"sha256": hashlib.sha256(metadata).hexdigest()}
        files = [f for f in self.files.get(name, []) if f["filename"] != filename]
        self.files[name] = [*files, entry]
        page = self.tree / "simple" / name / "index.json"
        page.parent.mkdir(parents=True, exist_ok=True)
        body = {"meta": {"api-version": "1.1"}, "name": name, "files": self.files[name]}
        page.write_text(json.dumps(body))
        return f"/files/{name}/{filename}"

    def add_dist(self, path: Path) -> str:
        name = re.sub(r"[-_.]+", "-", path.name.split("-")[0]).lower()
        metadata = metadata_of(path) if path.suffix == ".whl" else None
        return self.add(name, path.name, path.read_bytes(), metadata=metadata)

    def requests(self, path: str, status: int | None = None) -> int:
        """How many GETs for `path` (exactly) the upstream answered (with `status` only, when
        given: 206 for a range, 200 for the whole file)."""
        log = self.where / "access.log"
        if not log.exists():
            return 0
        pattern = rf'"GET {re.escape(path)} HTTP/[0-9.]+" ' + (str(status) if status else "")
        return len(re.findall(pattern, log.read_text()))
