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
    return (
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
        f"description = {json.dumps(description)}\n{project}"
    ) + ("\n" + tail if tail else "")


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
