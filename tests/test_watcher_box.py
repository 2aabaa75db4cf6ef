"""The build box on its own: a real supervisor process, real children, a real lifeline pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from insiders.watcher import box
from tests.test_watcher import gone

HOOK = """\
setsid sleep 600 &
echo $! > "$SCRATCH/setsid.pid"
echo escaped > "$OUTSIDE" 2>/dev/null && echo WROTE OUTSIDE || echo REFUSED OUTSIDE
echo inside > "$SCRATCH/inside.txt" && echo WROTE INSIDE
"""


def run_box(tmp_path: Path, script: str) -> tuple[subprocess.Popen[str], int, Path]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    lifeline, keep_alive = os.pipe()
    env = {**os.environ, "SCRATCH": str(scratch), "OUTSIDE": str(tmp_path / "outside")}
    process = subprocess.Popen(
        [
            *(sys.executable, "-I", box.__file__, "--lifeline", str(lifeline)),
            *("--writable", str(scratch), "--", "sh", "-c", script),
        ],
        pass_fds=(lifeline,),
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    os.close(lifeline)
    return process, keep_alive, scratch


def wait_for(path: Path) -> int:
    deadline = time.monotonic() + 20
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int(path.read_text())


def test_leftovers_die_when_the_command_ends(tmp_path: Path) -> None:
    process, keep_alive, scratch = run_box(tmp_path, HOOK)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        os.close(keep_alive)
    assert process.returncode == 0
    assert "REFUSED OUTSIDE" in output
    assert "WROTE INSIDE" in output
    assert not (tmp_path / "outside").exists()
    assert gone(wait_for(scratch / "setsid.pid"))


def test_everything_dies_when_the_lifeline_closes(tmp_path: Path) -> None:
    """What happens when insidersd dies (kill -9 included): the kernel closes its end."""
    process, keep_alive, scratch = run_box(tmp_path, HOOK + "sleep 600\n")
    child = wait_for(scratch / "setsid.pid")
    assert not gone(child, wait=0.3)
    os.close(keep_alive)
    process.communicate(timeout=30)
    assert process.returncode == box.KILLED_BY_LIFELINE
    assert gone(child)
