"""This installation of insiders: where its own scripts and its unit files are, and how a person
types its commands here.

A pip, pipx or venv install puts `insidersd` and `insidersctl` in a bin directory that may not be
on PATH (`make run` uses .venv/bin), so a hint that says `insidersd` can be "command not found".
`command` names a script the way that works here: its bare name when PATH finds this very file,
else its absolute path. The wheel installs the unit files of units/ as data
(share/insiders/units/, pyproject.toml), which `unit_templates` finds for `server enable`.

Both are looked up in the distribution's own record of its files (importlib.metadata), which is
right for every install scheme (a venv, pip --user, pipx, a system prefix); a source checkout
reads units/ itself, so an edited unit is what `server enable` writes. Imported by the commands
that need it only (importlib.metadata costs a few ms at start).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "insiders"
SCOPES = ("user", "system")
# The units' own names, as units/SCOPE/ holds them (the sysusers entry is in units/system/ too).
UNIT_SUFFIXES = (".service", ".socket")


def _files() -> list[Path]:
    """The absolute paths of the files this installation's record lists (empty without one)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return []
    return [Path(os.path.normpath(str(dist.locate_file(f)))) for f in dist.files or ()]


def script(name: str) -> Path | None:
    """The absolute path of this installation's script `name` (insidersd, insidersctl)."""
    for path in _files():
        if path.name == name and path.parent.name == "bin" and path.is_file():
            return path
    # No record (a distribution's package may drop it): the scripts beside the interpreter.
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def command(name: str, *, sudo: bool = False) -> str:
    """`name` as a person types it here: the bare name when PATH finds this installation's
    script, else the script's absolute path (quoted for a shell when it must be). `sudo`: after
    sudo, whose PATH is its own (secure_path), where only the absolute path is sure to work."""
    own = script(name)
    if own is None:
        return name
    if sudo:
        return shlex.quote(str(own))
    found = shutil.which(name)
    try:
        if found and os.path.samefile(found, own):
            return name
    except OSError:
        pass  # a dangling PATH entry: the absolute path below is what works
    return shlex.quote(str(own))


def _checkout_units() -> Path | None:
    """units/ of the source checkout this package is imported from (an editable install)."""
    here = Path(__file__).resolve()
    root = here.parents[2]
    if here.parents[1].name == "ctl" and (root / "units" / "user" / "insiders.service").is_file():
        return root / "units"
    return None


def units_directory(scope: str) -> Path | None:
    """The directory of this installation's unit files for `scope` (user or system)."""
    if scope not in SCOPES:
        raise ValueError(scope)
    if checkout := _checkout_units():
        return checkout / scope
    marker = ("share", "insiders", "units", scope, "insiders.service")
    for path in _files():
        if path.parts[-5:] == marker:
            return path.parent
    for prefix in (Path(sys.prefix), Path("/usr")):
        candidate = prefix / "share" / "insiders" / "units" / scope
        if (candidate / "insiders.service").is_file():
            return candidate
    return None


def unit_templates(scope: str) -> dict[str, str]:
    """The unit files of `scope` (name -> text), as units/SCOPE/ holds them; empty when this
    installation has none (a distribution's package that installs its units itself)."""
    directory = units_directory(scope)
    if directory is None:
        return {}
    return {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if path.suffix in UNIT_SUFFIXES
    }


def sysusers_template() -> str | None:
    """units/system/insiders.sysusers: the system user the system unit runs as."""
    directory = units_directory("system")
    if directory is None:
        return None
    try:
        return (directory / "insiders.sysusers").read_text()
    except FileNotFoundError:
        return None
