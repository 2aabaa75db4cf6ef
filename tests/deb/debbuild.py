"""Build insiders' Debian package in a Debian trixie tree, and check it with lintian.

The package must be built against trixie's debhelper, dh-python and Python libraries whatever the
host runs, so the build happens inside a tree: the systemd tests' debootstrapped trixie
(tests/systemd/nspawn_harness.py) plus build-essential, the Build-Depends of debian/control and
lintian. That tree is cached under /var/tmp like the base tree, keyed by what went into it, and
each build runs in an ephemeral copy of it (systemd-nspawn --ephemeral), so builds never change it.

`make deb` runs this file:  python3 -m tests.deb.debbuild --out dist/deb
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.systemd.nspawn_harness import (
    CACHE_PARENT,
    HarnessError,
    cached_tree,
    ensure_tree,
    missing_host_tools,
    tree_key,
)

ROOT = Path(__file__).resolve().parents[2]
# The host's tools (pyenv's shims, say) must not leak into the build: pybuild breaks on them.
BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What the build tree has beyond the build dependencies.
EXTRA_PACKAGES = ("lintian",)
LINTIAN_FAIL_ON = "error,warning"
BUILD_TREE = "build"


# (host path, path inside)
Bind = tuple[Path, str]


@dataclass(frozen=True)
class Built:
    """One package built: the .deb, and lintian's verdict when it was asked for."""

    deb: Path
    lintian: str | None
    lintian_ok: bool


def run_in_tree(
    tree: Path,
    script: str,
    *,
    log: Path,
    binds: Sequence[Bind] = (),
    ephemeral: bool = True,
    timeout: float = 1800.0,
) -> int:
    """Run a shell script in `tree` (not booted: nspawn with a stub init); output goes to `log`."""
    command = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={tree}",
        "--register=no",
        "--keep-unit",
        "--as-pid2",
        "--console=pipe",
        f"--setenv=PATH={BUILD_PATH}",
        "--setenv=LANG=C.UTF-8",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "--setenv=HOME=/root",
        *(f"--bind={host}:{inside}" for host, inside in binds),
    ]
    if ephemeral:
        command.append("--ephemeral")
    command += ["--", "sh", "-ec", script]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={"PATH": os.environ.get("PATH", BUILD_PATH)},
        )  # fmt: skip
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            raise HarnessError(f"timed out after {timeout:.0f}s; see {log}") from None


def relations(control: str, field: str) -> list[str]:
    """The items of a relationship field of debian/control (of its first stanza that has it).

    A field runs on over indented lines and comment lines, up to the next field.
    """
    pattern = rf"^{re.escape(field)}:(.*?)(?=^[^\s#]|\Z)"
    match = re.search(pattern, control, re.MULTILINE | re.DOTALL)
    if match is None:
        raise HarnessError(f"debian/control has no {field}")
    lines = (line.split("#", 1)[0].strip() for line in match.group(1).splitlines())
    items = ",".join(line for line in lines if line).split(",")
    return [item.strip() for item in items if item.strip()]


def build_depends(control: str) -> str:
    """debian/control's Build-Depends, normalised (the build tree's cache key)."""
    return ", ".join(sorted(relations(control, "Build-Depends")))


def ensure_build_tree(source: Path, log: Path) -> Path:
    """The cached build tree for the source at `source`, made on first use.

    Made like the base tree: in a temporary directory renamed once complete, under a lock; an
    older build tree (other build dependencies) is removed, it is hundreds of megabytes.
    """
    base = ensure_tree(log)
    spec = f"{tree_key()} {build_depends((source / 'debian/control').read_text())} "
    spec += " ".join(EXTRA_PACKAGES)
    key = hashlib.sha256(spec.encode()).hexdigest()[:12]
    prefix = f"insiders-test-{BUILD_TREE}-root-"
    final = CACHE_PARENT / f"{prefix}{key}"
    lock_path = CACHE_PARENT / f".{prefix}{key}.lock"

    def install_build_dependencies(work: Path) -> None:
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(work)], check=True)
        script = (
            "apt-get update -q\n"
            "apt-get install -y -q --no-install-recommends build-essential "
            + " ".join(EXTRA_PACKAGES)
            + "\napt-get build-dep -y -q --no-install-recommends /src\n"
            "apt-get clean\n"
        )
        status = run_in_tree(work, script, log=log, binds=[(source, "/src")], ephemeral=False)
        if status != 0:
            raise HarnessError(f"installing the build dependencies failed ({status}); see {log}")
        for old in CACHE_PARENT.glob(f"{prefix}*"):
            if old.is_dir() and old.name != work.name:
                shutil.rmtree(old, ignore_errors=True)
        for old in CACHE_PARENT.glob(f".{prefix}*.lock"):
            if old.name != lock_path.name:
                old.unlink(missing_ok=True)

    return cached_tree(final, lock_path, install_build_dependencies)


def source_files(root: Path = ROOT) -> list[str]:
    """The files of the working tree that git knows or would add (not what .gitignore names)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout  # fmt: skip
    names = [os.fsdecode(name) for name in listing.split(b"\0") if name]
    return [name for name in names if (root / name).is_file() or (root / name).is_symlink()]


def stage_source(dest: Path, version: str | None = None, root: Path = ROOT) -> Path:
    """A copy of the source tree at dest/insiders; with `version`, relabelled as that version.

    A relabelled copy is a newer build of the same code, for testing upgrades: the Python
    version and a new changelog entry both say `version`.
    """
    tree = dest / "insiders"
    for name in source_files(root):
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    if version is not None:
        init = tree / "daemon/insiders/__init__.py"
        text = init.read_text()
        init.write_text(re.sub(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"', text))
        changelog = tree / "debian/changelog"
        entry = (
            f"insiders ({version}) unstable; urgency=medium\n\n"
            "  * A newer build of the same code, for the upgrade test.\n\n"
            f" -- insiders developers <insiders@example.org>  "
            f"{email.utils.formatdate(usegmt=False)}\n\n"
        )
        changelog.write_text(entry + changelog.read_text())
    return tree


def version_of(source: Path) -> str:
    first = (source / "debian/changelog").read_text().split("\n", 1)[0]
    match = re.match(r"insiders \(([^)]+)\)", first)
    if match is None:
        raise HarnessError(f"cannot read the version in {first!r}")
    return match.group(1)


def build(
    stage: Path, sources: Sequence[Path], *, log: Path, lintian: Sequence[Path] = ()
) -> list[Built]:
    """Build each source tree (each a directory under `stage`) in one ephemeral build tree.

    The .debs land next to their source directories; lintian checks those of `lintian`.
    """
    if missing := missing_host_tools():
        raise HarnessError(f"missing {', '.join(missing)}")
    tree = ensure_build_tree(sources[0], log)
    lines = ["chmod 1777 /tmp"]
    for source in sources:
        inside = f"/build/{source.relative_to(stage)}"
        deb = f"{inside}/../insiders_{version_of(source)}_all.deb"
        lines.append(f"cd {inside} && dpkg-buildpackage -us -uc -b")
        if source in lintian:
            # lintian warns when it runs as root; nobody can read what it checks.
            lines.append(
                f"runuser -u nobody -- env HOME=/tmp lintian --fail-on {LINTIAN_FAIL_ON} "
                f"--display-info {deb} >{inside}/../lintian.txt 2>&1 "
                f"&& echo 0 >{inside}/../lintian.rc || echo $? >{inside}/../lintian.rc"
            )
    status = run_in_tree(tree, "\n".join(lines), log=log, binds=[(stage, "/build")])
    if status != 0:
        raise HarnessError(f"the package build failed ({status}); see {log}")
    built = []
    for source in sources:
        deb = source.parent / f"insiders_{version_of(source)}_all.deb"
        if not deb.is_file():
            raise HarnessError(f"no {deb.name} after the build; see {log}")
        report = None
        if source in lintian:
            report = (source.parent / "lintian.txt").read_text()
            ok = (source.parent / "lintian.rc").read_text().strip() == "0"
        built.append(Built(deb, report, ok if report is not None else True))
    return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist/deb", help="default dist/deb")
    parser.add_argument("--version", help="build as this version (a test build)")
    parser.add_argument("--no-lintian", action="store_true", help="skip lintian")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("debbuild: building in a trixie tree needs root (systemd-nspawn)", file=sys.stderr)
        return 2
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "build.log"
    log.write_bytes(b"")
    stage = args.out / ".stage"
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        source = stage_source(stage, args.version)
        (result,) = build(stage, [source], log=log, lintian=[] if args.no_lintian else [source])
        for old in args.out.glob("insiders_*_all.deb"):
            old.unlink()
        deb = Path(shutil.copy2(result.deb, args.out))
    except (HarnessError, subprocess.CalledProcessError) as error:
        print(f"debbuild: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    took = time.monotonic() - started
    print(f"{deb} ({deb.stat().st_size} bytes) in {took:.0f}s; build log {log}")
    if result.lintian is not None:
        print(result.lintian, end="")
        if not result.lintian_ok:
            print(f"debbuild: lintian --fail-on {LINTIAN_FAIL_ON} failed", file=sys.stderr)
            return 1
        print("lintian: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
