"""debian/ agrees with the project: version, dependencies, the default config (no root needed).

The lifecycle test catches these too, but minutes later and only as root; these say at once what
drifted when pyproject.toml or the settings change.
"""

from __future__ import annotations

import re
import tomllib

import msgspec
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from insiders import __version__
from insiders.config import Settings, load_settings
from tests.deb.debbuild import ROOT, build_depends, relations

DEBIAN = ROOT / "debian"


def control_field(stanza: str, name: str) -> set[str]:
    """The package names in a relationship field of a debian/control stanza."""
    return {re.split(r"[\s(<\[]", item, maxsplit=1)[0] for item in relations(stanza, name)}


def debian_name(requirement: str) -> str:
    """Debian's name for a Python distribution (the python3-<name> convention)."""
    return f"python3-{canonicalize_name(Requirement(requirement).name)}"


@pytest.fixture(scope="module")
def stanzas() -> tuple[str, str]:
    source, binary = (DEBIAN / "control").read_text().strip().split("\n\n")
    return source, binary


@pytest.fixture(scope="module")
def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies: list[str] = project["dependencies"]
    return dependencies


def test_the_changelog_names_the_code_version() -> None:
    first = (DEBIAN / "changelog").read_text().split("\n", 1)[0]
    assert first.startswith(f"insiders ({__version__}) "), first


def test_every_python_dependency_is_a_debian_dependency(
    stanzas: tuple[str, str], requirements: list[str]
) -> None:
    source, binary = stanzas
    needed = {debian_name(r) for r in requirements}
    assert needed <= control_field(binary, "Depends"), needed - control_field(binary, "Depends")
    # The build imports every module (debian/import-check.py), so it needs them all too.
    build = control_field(source, "Build-Depends")
    assert needed <= build, needed - build
    assert "git" in control_field(binary, "Depends")


def test_the_build_tree_key_ignores_layout_and_comments() -> None:
    a = "Source: x\nBuild-Depends:\n b (>= 1),\n# why\n a,\n\nPackage: x\n"
    b = "Source: x\nBuild-Depends: a, b (>= 1)\nStandards-Version: 4\n"
    assert build_depends(a) == build_depends(b) == "a, b (>= 1)"


def test_the_default_config_loads_as_the_defaults() -> None:
    assert load_settings(DEBIAN / "config.toml", required=True) == Settings()


def test_the_default_config_mentions_every_setting() -> None:
    text = (DEBIAN / "config.toml").read_text()
    missing = []
    for field in msgspec.structs.fields(Settings):
        if field.encode_name in ("targets", "projects", "mirrors"):
            assert f"[{field.encode_name}.NAME]" in text
            continue
        if field.encode_name == "log-level":
            assert "# log-level = " in text
            continue
        assert f"[{field.encode_name}]" in text, field.encode_name
        default = field.default_factory()  # type: ignore[operator]
        for sub in msgspec.structs.fields(type(default)):
            # The service's GitHub token is a credential (the file says where), not a file path.
            if sub.encode_name == "github-token-file":
                continue
            if f"# {sub.encode_name} = " not in text:
                missing.append(f"{field.encode_name}.{sub.encode_name}")
    assert not missing, f"debian/config.toml does not mention {missing}"
