"""The man pages: generated from the parsers by debian/manpages.py, installed by the wheel.

The same generator runs as the wheel's build hook (pyproject.toml) and in debian/rules, so a
command added to a parser is in both packages' pages.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from insiders import __version__
from insidersctl.cli import parser
from insidersctl.completion import walk
from insidersctl.context import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manpages", ROOT / "debian" / "manpages.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    written = generator().write_manpages(out, __version__)
    return {path.stem: path.read_text() for path in written}


def test_every_command_and_option_is_in_the_page(pages: dict[str, str]) -> None:
    page = pages["insidersctl"].replace("\\-", "-")
    for node in walk(parser()):
        if node.path:
            assert f"insidersctl {node.path}" in page, node.path
        for option in set(node.options) - {"-h", "--help"}:  # every page has those
            assert option in page, (node.path, option)
    daemon = pages["insidersd"].replace("\\-", "-")
    for option in ("--config", "--port", "--upstream-mode", "--runtime-dir"):
        assert option in daemon
    # The sections a parser does not know come from debian/NAME.1.include.
    assert ".SH FILES" in pages["insidersctl"]


def section(page: str, title: str) -> str:
    """The text of the page's section `title` (up to the next .SH)."""
    _, found, rest = page.partition(f"\n.SH {title}\n")
    assert found, f"no section {title}"
    return rest.split("\n.SH", 1)[0]


def test_options_every_command_takes_are_said_once(pages: dict[str, str]) -> None:
    page = pages["insidersctl"]
    for option in ("json", "socket", "runtime\\-dir", "config", "timeout"):
        assert page.count(f"\\fB\\-\\-{option}\\fR") == 1, option
    shared = section(page, "CONNECTION AND OUTPUT")
    assert "\\fB\\-\\-socket\\fR" in shared
    # A command's section has its own options, not those again.
    assert "usage: insidersctl repos list [\\-h]\n" in page
    # It grows with the commands (945 lines when the options were said with each of 28 of them).
    assert len(page.splitlines()) < 800


def test_exit_status_and_environment(pages: dict[str, str]) -> None:
    page = pages["insidersctl"]
    codes = section(page, "EXIT STATUS")
    for code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE):
        assert f".TP\n.B {code}\n" in codes
    assert codes.count(".TP") == 4
    environment = section(page, "ENVIRONMENT")
    for name in ("NO_COLOR", "INSIDERS_SOCKET", "TERM"):
        assert f".B {name}" in environment
    assert ".SH COMMENTS" not in page  # the --help epilog, said again by EXIT STATUS


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
@pytest.mark.parametrize("name", ["insidersctl", "insidersd"])
def test_man_renders_them_without_a_warning(
    pages: dict[str, str], name: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.1"
    path.write_text(pages[name])
    result = subprocess.run(
        ["man", "--warnings", "-l", str(path)],
        env={"MANWIDTH": "80", "MANPAGER": "cat", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert name in result.stdout


def test_the_installed_wheel_carries_the_pages() -> None:
    """make installs the project as a wheel (editable): its data puts the pages in share/man."""
    installed = Path(sys.prefix) / "share" / "man" / "man1"
    for name in ("insidersctl", "insidersd"):
        text = (installed / f"{name}.1").read_text()
        assert f'"{name} {__version__}"' in text or __version__ in text
    assert "insidersctl completion" in (installed / "insidersctl.1").read_text().replace("\\-", "-")


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_finds_them_next_to_the_programs() -> None:
    """man looks in ../share/man of each PATH entry: with the environment's bin/ on PATH,
    `man insidersctl` opens the page the wheel installed."""
    result = subprocess.run(
        ["man", "-w", "insidersctl"],
        env={"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == str(
        Path(sys.prefix) / "share" / "man" / "man1" / "insidersctl.1"
    )
