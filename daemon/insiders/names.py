"""Project names and distribution filenames: pure functions over packaging's parsers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

__all__ = [
    "DistFilename",
    "InvalidFilename",
    "NormalizedName",
    "is_valid_name",
    "normalize",
    "parse_dist_filename",
    "parse_version",
]

# PEP 508 names: letters, digits, and . _ - inside.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)

DistKind = Literal["wheel", "sdist"]


class InvalidFilename(ValueError):
    """A filename that is not a wheel or sdist name packaging accepts."""


def is_valid_name(name: str) -> bool:
    return bool(_VALID_NAME.match(name))


def normalize(name: str) -> NormalizedName:
    return canonicalize_name(name)


def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True, slots=True)
class DistFilename:
    filename: str
    name: NormalizedName
    version: Version
    kind: DistKind

    @property
    def has_core_metadata(self) -> bool:
        """Only wheels advertise PEP 658 metadata: an sdist's PKG-INFO may mark fields dynamic."""
        return self.kind == "wheel"


def parse_dist_filename(filename: str) -> DistFilename:
    """Parse a wheel or sdist filename; raise InvalidFilename with a message a person can act on."""
    if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
        raise InvalidFilename(f"{filename!r} is not a plain file name")
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return DistFilename(filename, name, version, "wheel")
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return DistFilename(filename, name, version, "sdist")
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as error:
        raise InvalidFilename(f"{filename!r}: {error}") from None
    raise InvalidFilename(f"{filename!r} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)")
