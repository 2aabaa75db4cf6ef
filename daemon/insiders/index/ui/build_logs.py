"""What a build log tells a reader, as plain data: its error in a few lines, the tag and commit it
was built from, and its text without this server's paths.

Build logs are read by everyone who may read the index, so the directories of this server (the
build's scratch directory, the data and cache directories, where insiders itself is installed, a
watched local repository) are cut to names relative to them: `$SCRATCH/tmp/build-env-…/…`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

# The watcher's first lines (insiders.watcher.release): `insiders: tag: v1.0, commit 0123…, …`.
_PROVENANCE = re.compile(r"^insiders: tag: (?P<tag>\S+), commit (?P<commit>[0-9a-f]{7,64})\b", re.M)
# A Python exception's own line (`ValueError: …`, `pkg.BuildError`), or a tool's `ERROR …` line.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Failure)\b.*|error: .*)$")
_TOOL_ERROR = re.compile(r"^(?:ERROR|FAILED|error)\b.*$")
ERROR_LINES = 6  # at most, in a summary


class Provenance(msgspec.Struct, frozen=True):
    tag: str
    commit: str

    @property
    def short(self) -> str:
        return self.commit[:12]


class PathCut(msgspec.Struct, frozen=True):
    """A server path and the name readers see instead; `children` cuts one more level too (the
    scratch directory holds one temporary directory per build)."""

    path: str
    label: str
    children: bool = False


def provenance(text: str) -> Provenance | None:
    match = _PROVENANCE.search(text[:4096])
    return Provenance(match["tag"], match["commit"]) if match else None


def error_lines(text: str) -> tuple[str, ...]:
    """The lines that say why a build failed: the last exception line with the lines indented
    under it (a parser's pointer), then the last tool's ERROR line; else the last lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    picked: list[str] = []
    for index in range(len(lines) - 1, -1, -1):
        if _EXCEPTION.match(lines[index]):
            picked = [lines[index]]
            for following in lines[index + 1 :]:
                if not following.startswith((" ", "\t")) or not following.strip():
                    break
                picked.append(following)
            break
    tool = next((line for line in reversed(lines) if _TOOL_ERROR.match(line)), None)
    if tool and tool not in picked:
        picked.append(tool)
    if not picked:
        picked = [line for line in lines if line.strip()][-3:]
    return tuple(picked[:ERROR_LINES])


def cut_paths(text: str, cuts: Sequence[PathCut]) -> str:
    """`text` with each server path in `cuts` replaced by its label, the longest paths first."""
    for cut in sorted(cuts, key=lambda c: -len(c.path)):
        path = cut.path.rstrip("/")
        if not path or path == "/":
            continue
        pattern = re.escape(path) + (r"/[^/\s'\"]+" if cut.children else r"(?![\w.-])")
        text = re.sub(pattern, cut.label.replace("\\", "\\\\"), text)
    return text


def server_paths(data: Path, cache: Path) -> list[PathCut]:
    """The paths of this server a build log may name: the watcher's scratch directory (one
    temporary directory per build, under the cache's `builds`), the data and cache directories,
    and the Python insiders runs on (its sandboxed builds run with it)."""
    cuts = [
        PathCut(str(cache / "builds"), "$SCRATCH", children=True),
        PathCut(str(data), "$DATA"),
        PathCut(str(cache), "$CACHE"),
    ]
    if sys.prefix != sys.base_prefix:  # a virtual environment: where insiders is installed
        cuts.append(PathCut(sys.prefix, "$VENV"))
    return cuts
