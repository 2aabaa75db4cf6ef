"""The one small project the tests and the benchmark build: hatchling, a module holding VERSION.

Pure standard library, so that the benchmark (bench/) can use it as well as the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path


def module_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def pyproject(
    name: str,
    version: str,
    *,
    description: str = "A test package",
    project: str = "",
    tail: str = "",
) -> str:
    """pyproject.toml of a hatchling project: `project` adds keys to [project], `tail` tables."""
    described = f"description = {json.dumps(description)}\n{project}"
    return any_backend_pyproject(name, version, project=described) + ("\n" + tail if tail else "")


def any_backend_pyproject(
    name: str,
    version: str = "0.0.0",
    *,
    requires: tuple[str, ...] = ("hatchling",),
    backend: str = "hatchling.build",
    in_tree: bool = False,
    project: str = "",
) -> str:
    """pyproject.toml naming its build backend and what it requires: `in_tree` loads the backend
    from the project's own files (backend-path ["."]); `project` adds keys to [project]."""
    listed = ", ".join(f'"{r}"' for r in requires)
    path = 'backend-path = ["."]\n' if in_tree else ""
    return (
        f'[build-system]\nrequires = [{listed}]\nbuild-backend = "{backend}"\n{path}\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n{project}'
    )


def in_tree_backend_pyproject(name: str, requires: tuple[str, ...] = ("hatchling",)) -> str:
    """A project built by its own backend.py: what a test writes there runs as the build."""
    return any_backend_pyproject(name, requires=requires, backend="backend", in_tree=True)


def broken_pyproject(name: str) -> str:
    """A hatchling project whose build fails at once: a dependency that is not a requirement."""
    return any_backend_pyproject(name, project='dependencies = ["not a valid requirement !!"]\n')


def write_hatchling_project(
    directory: Path,
    name: str,
    version: str,
    *,
    description: str = "A test package",
    project: str = "",
    tail: str = "",
    files: Mapping[str, str] | None = None,
) -> Path:
    """`directory` made a project: pyproject.toml, src/MODULE/__init__.py with its VERSION, and
    `files` (relative path: text). Returns `directory`."""
    module = directory / "src" / module_name(name)
    module.mkdir(parents=True, exist_ok=True)
    (module / "__init__.py").write_text(f'VERSION = "{version}"\n')
    text = pyproject(name, version, description=description, project=project, tail=tail)
    (directory / "pyproject.toml").write_text(text)
    for relative, content in (files or {}).items():
        (directory / relative).write_text(content)
    return directory
