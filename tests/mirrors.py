"""What the mirror tests share, for a directory target and a bucket alike: daemons stopped at the
end of a test whatever its outcome (the `launch` fixture), a home mirroring to a directory,
uploads whose bytes a second store gets again, insidersctl that must succeed, and the
quarantine check a front must pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tests.fronts import ctl, get, write_config
from tests.support import Daemon

NO_UPSTREAM = ["--upstream-mode", "none"]
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html; q=0.01"

#: Daemon(home, args).start(wait=...), stopped at the end of the test (the `launch` fixture)
Launch = Callable[..., Daemon]


def launching() -> Iterator[Launch]:
    """The `launch` fixture's body: every daemon it started and still running is stopped."""
    started: list[Daemon] = []

    def start(home: Path, args: list[str], *, wait: bool = True) -> Daemon:
        daemon = Daemon(home, args)
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def mirrored_home(home: Path, tree: Path) -> Path:
    """`home`, whose config mirrors the store to the directory `tree` as [mirrors.web]."""
    write_config(home, f'[mirrors.web]\ndirectory = "{tree}"\n')
    return home


def upload(daemon: Daemon, tmp_path: Path, name: str, version: str, size: int = 2000) -> Path:
    """NAME-VERSION's wheel uploaded to `daemon`, kept under tmp_path/wheels: a second store
    gets the very same bytes."""
    payload = f"{name}{version}".encode() * size
    return daemon.upload_wheel(tmp_path / "wheels", name, version, payload)


def synced(tmp_path: Path, launch: Launch, *releases: tuple[str, str]) -> tuple[Daemon, Path]:
    """A daemon mirroring to tmp_path/mirror, given `releases` (name, version) and synced once:
    the daemon, and the mirror's tree."""
    tree = tmp_path / "mirror"
    daemon = launch(mirrored_home(tmp_path / "daemon", tree), NO_UPSTREAM)
    for name, version in releases:
        upload(daemon, tmp_path, name, version)
    ok(daemon.home, "mirrors", "sync", "web")
    return daemon, tree


def ok(home: Path, *args: str) -> str:
    """insidersctl ARGS against `home`'s daemon, which must succeed: its output."""
    done = ctl(home, *args)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def check_quarantine_at_front(
    front: str,
    daemon: Daemon,
    mirror: str,
    wheel: Path,
    quarantined: Callable[[], None] = lambda: None,
) -> None:
    """Issue 21, item 3, through the nginx `front` of `daemon`'s target `mirror`, which holds
    `wheel` (NAME-VERSION): a quarantined project's files, metadata and JSON documents answer 404
    there, as the daemon answers, its page lists no file and says why (`quarantined` checks
    more then); lifted, they are all back."""
    name, version = wheel.name.split("-")[:2]
    name = name.replace("_", "-")
    urls = [
        f"/files/{name}/{wheel.name}",
        f"/files/{name}/{wheel.name}.metadata",
        f"/pypi/{name}/json",
        f"/pypi/{name}/{version}/json",
    ]
    ok(daemon.home, "mirrors", "sync", mirror)
    for url in urls:
        assert get(f"{front}{url}").status_code == 200, url

    ok(daemon.home, "projects", "status", name, "quarantined", "--reason", "malware")
    ok(daemon.home, "mirrors", "sync", mirror)
    for url in urls:
        assert get(f"{daemon.url}{url}").status_code == 404, url
        assert get(f"{front}{url}").status_code == 404, url
    page = get(f"{front}/simple/{name}/", headers={"Accept": PIP_ACCEPT}).json()
    assert page["files"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}
    quarantined()

    ok(daemon.home, "projects", "status", name, "active")
    ok(daemon.home, "mirrors", "sync", mirror)
    for url in urls:
        assert get(f"{front}{url}").status_code == 200, url
    assert get(f"{front}{urls[0]}").content == wheel.read_bytes()
