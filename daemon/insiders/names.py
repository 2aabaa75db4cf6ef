"""Project names and distribution filenames: pure functions over packaging's parsers.

packaging's parsers are lenient on purpose (they read what old tools wrote); what enters the
index is held to more: ASCII only (under re.IGNORECASE without re.ASCII, `[A-Z]` matches U+212A
KELVIN SIGN and U+017F LONG S), a filename that every client can fetch from a URL and every file
system can hold, and, for new uploads, the normalised name and version the specs ask for.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from packaging.tags import Tag
from packaging.utils import (
    BuildTag,
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from insiders.errors import InvalidFilename

__all__ = [
    "DistFilename",
    "InvalidFilename",
    "NormalizedName",
    "check_normalized",
    "is_valid_name",
    "normalize",
    "parse_dist_filename",
    "parse_version",
]

# PEP 508 names: ASCII letters, digits, and . _ - inside (fullmatch: `$` would allow a "\n").
_VALID_NAME = re.compile(r"[A-Z0-9](?:[A-Z0-9._-]*[A-Z0-9])?", re.IGNORECASE | re.ASCII)
# What a wheel or sdist filename can hold: the name, version (+ local, ! epoch) and tags.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*", re.ASCII)
# One wheel tag (python, abi or platform), possibly a compressed set: py2.py3, any.
_WHEEL_TAG = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*", re.ASCII)
# Room for the store's companions of a file (FILE.metadata and its temp file) within the
# 255 bytes a file name may have.
MAX_FILENAME = 200
MAX_NAME = 128
# Digits beyond Python's int-string limit (4300) raised ValueError inside packaging.
MAX_VERSION = 128

DistKind = Literal["wheel", "sdist"]


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and _VALID_NAME.fullmatch(name) is not None


def normalize(name: str) -> NormalizedName:
    return canonicalize_name(name)


@functools.lru_cache(maxsize=1 << 16)
def parse_version(text: str) -> Version | None:
    """The PEP 440 version, None when `text` is none. Kept for the last 65,536 spellings: every
    upload into a project orders and checks all its versions, thousands in a large project
    (a Version is immutable, so sharing one is safe)."""
    if len(text) > MAX_VERSION:
        return None
    try:
        return Version(text)
    except ValueError:  # InvalidVersion, or a number past int()'s digit limit
        return None


@dataclass(frozen=True, slots=True)
class DistFilename:
    filename: str
    name: NormalizedName
    version: Version
    kind: DistKind
    build: BuildTag = ()
    tags: frozenset[Tag] = frozenset()

    @property
    def has_core_metadata(self) -> bool:
        """Only wheels advertise PEP 658 metadata: an sdist's PKG-INFO may mark fields dynamic."""
        return self.kind == "wheel"

    @property
    def slot(self) -> tuple[object, ...]:
        """What two files of one release may not share: one sdist; one wheel per build and tags.

        (A build tag is the spec's way to replace a broken wheel, so it makes another slot.)
        """
        return ("sdist",) if self.kind == "sdist" else ("wheel", self.build, self.tags)


def parse_dist_filename(filename: str) -> DistFilename:
    """Parse a wheel or sdist filename; raise InvalidFilename with a message a person can act on.

    Only names that can be listed and fetched safely pass: plain ASCII, no character that a URL,
    an HTML page or a terminal would read as something else (# ? % space < DEL U+202E ...).
    """
    shown = _shown(filename)
    if len(filename) > MAX_FILENAME:
        raise InvalidFilename(f"{shown}: longer than {MAX_FILENAME} characters")
    if not _SAFE_FILENAME.fullmatch(filename):
        raise InvalidFilename(
            f"{shown} is not a plain file name: a distribution's filename holds only ASCII "
            "letters, digits and . _ + ! -"
        )
    try:
        if filename.endswith(".whl"):
            name, version, build, tags = parse_wheel_filename(filename)
            for tag in filename[: -len(".whl")].split("-")[-3:]:
                if not _WHEEL_TAG.fullmatch(tag):
                    raise InvalidFilename(f"{shown}: {tag!r} is not a wheel tag")
            dist = DistFilename(filename, name, version, "wheel", build, tags)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            dist = DistFilename(filename, name, version, "sdist")
        else:
            raise InvalidFilename(f"{shown} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)")
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError) as error:
        if isinstance(error, InvalidFilename):
            raise
        raise InvalidFilename(f"{shown}: {_shown(str(error), 300)}") from None
    # packaging checks a wheel's name loosely and an sdist's not at all (1!2-1.0.tar.gz parses).
    if not is_valid_name(dist.name):
        raise InvalidFilename(
            f"{shown}: {dist.name!r} is not a project name (ASCII letters, digits and . _ - inside)"
        )
    if parse_version(str(dist.version)) is None:
        raise InvalidFilename(f"{shown}: the version is longer than {MAX_VERSION}")
    return dist


def check_normalized(dist: DistFilename) -> None:
    """Refuse a new file whose name or version is not written the normalised way.

    The binary distribution format and the sdist spec name files `{name}-{version}...` with the
    name normalised (lower case, runs of -_. as one _) and the version normalised (PEP 440): so
    one release has one spelling, and `foo_bar-01.0` cannot stand beside `foo_bar-1.0`. Files
    stored before this rule keep being served; current build backends write these names.
    """
    stem = f"{dist.name.replace('-', '_')}-{dist.version}"
    if dist.kind == "wheel":
        expected = f"{stem}-{dist.filename.split('-', 2)[2]}"
    else:
        expected = stem + (".tar.gz" if dist.filename.endswith(".tar.gz") else ".zip")
    if dist.filename != expected:
        raise InvalidFilename(
            f"{dist.filename!r} does not spell its name and version the normalised way the "
            f"specs ask for: name it {expected!r}"
        )


def release_slot(filename: str) -> tuple[Version, tuple[object, ...]] | None:
    """The version and slot of a stored file's name; None for a name that does not parse."""
    try:
        dist = parse_dist_filename(filename)
    except InvalidFilename:
        return None
    return dist.version, dist.slot


def _shown(text: str, limit: int = 80) -> str:
    """A value quoted for a message, cut short: an error must not echo megabytes back."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
