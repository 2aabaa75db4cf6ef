"""What a local repository says of itself before any build: that it is one, and the name of the
distribution it builds (pyproject.toml or setup.cfg, in the work tree, else at HEAD). Blocking:
run it in a thread.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from insiders.errors import RepoError
from insiders.names import is_valid_name

from .spec import GIT_ALLOW_PROTOCOL, ParsedSpec


def check_local(path: Path) -> None:
    """Refuse a path that is not a git repository the daemon can read."""
    if not path.exists():
        raise RepoError(f"{path}: no such directory (as seen by insidersd)")
    if not path.is_dir():
        raise RepoError(f"{path}: not a directory")
    result = _git(path, "rev-parse", "--git-dir")
    if result.returncode != 0:
        raise RepoError(f"{path}: not a git repository ({_first_line(result.stderr)})")


def read_dist_name(path: Path) -> str:
    """The distribution name a local repository declares: pyproject.toml or setup.cfg.

    The work tree's files first (what the user sees), else the committed ones (a bare repository).
    """
    tried: list[str] = []
    for filename in ("pyproject.toml", "setup.cfg"):
        text = _read_text(path / filename)
        if text is None:
            result = _git(path, "show", f"HEAD:{filename}")
            text = result.stdout if result.returncode == 0 else None
        if text is None:
            continue
        tried.append(filename)
        name = _name_from_pyproject(text) if filename == "pyproject.toml" else _name_from_cfg(text)
        if name is not None:
            return name
    found = f"{' and '.join(tried)} name no project" if tried else "no pyproject.toml"
    raise RepoError(
        f"cannot read the distribution name from {path} ({found}): add it to the SPEC as "
        f"{path}:DIST"
    )


def _name_from_pyproject(text: str) -> str | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    project = data.get("project")
    if isinstance(project, dict) and isinstance(project.get("name"), str):
        name: str = project["name"]
        return name if is_valid_name(name) else None
    poetry = data.get("tool", {}).get("poetry") if isinstance(data.get("tool"), dict) else None
    if isinstance(poetry, dict) and isinstance(poetry.get("name"), str):
        name = poetry["name"]
        return name if is_valid_name(name) else None
    return None


def _name_from_cfg(text: str) -> str | None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    name = parser.get("metadata", "name", fallback=None)
    return name.strip() if name and is_valid_name(name.strip()) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "GIT_ALLOW_PROTOCOL": GIT_ALLOW_PROTOCOL,
        },
        check=False,
    )


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].removeprefix("fatal: ") if lines else "git failed"


def resolve_dist(parsed: ParsedSpec, spec: str) -> str:
    """DIST from the SPEC, else from the local repository (blocking); checks a local repository."""
    local = parsed.source.local_path
    if local is not None:
        check_local(local)
    if parsed.dist is not None:
        return parsed.dist
    if local is None:
        raise RepoError(
            f"{spec}: give the distribution name of a remote repository: {spec}:DIST "
            "(it is not fetched before the watcher's first check)"
        )
    return read_dist_name(local)
