"""A booted Debian container with a real systemd, for the tests under tests/systemd/.

PID 1 on these machines is not systemd, but `systemd-nspawn -b` boots a debootstrapped Debian
tree in a few seconds (see shared/notes/systemd-testing.md). The tree is built once and cached
under /var/tmp, keyed by what goes into it; each test session boots it `--ephemeral`, so nothing
a test does survives the poweroff.

Run this file to build (or just locate) the cached tree:  python tests/systemd/nspawn_harness.py
[SUITE]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# trixie (systemd 257) is what the Debian package targets; bookworm (systemd 252, like RHEL 9) is
# what most users of the user unit run, so the user unit is tested under both.
SUITE = "trixie"
SUITES = ("trixie", "bookworm")
VARIANT = "minbase"
# procps gives ps/pgrep for debugging a failure inside the container; git and python3-venv are what
# the watcher and the venv install need; bubblewrap is the builds' sandbox.
INCLUDE = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "python3",
    "python3-venv",
    "ca-certificates",
    "git",
    "procps",
    "bubblewrap",
)
CACHE_PARENT = Path(os.environ.get("INSIDERS_TEST_ROOT_CACHE", "/var/tmp"))
# Wheels pip downloads inside the container are kept here between runs (bind-mounted in).
PIP_CACHE = CACHE_PARENT / "insiders-test-pip-cache"
HOST_PACKAGES = ("systemd-container", "debootstrap")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# (host path, path inside, read-only)
Bind = tuple[Path, str, bool]


class HarnessError(RuntimeError):
    """The container could not be built, booted or driven."""


def tree_key(suite: str = SUITE) -> str:
    spec = f"{suite} {VARIANT} {','.join(INCLUDE)} v1"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def tree_path(suite: str = SUITE) -> Path:
    return CACHE_PARENT / f"insiders-test-root-{tree_key(suite)}"


def missing_host_tools() -> list[str]:
    tools = ("debootstrap", "systemd-nspawn", "nsenter")
    return [tool for tool in tools if shutil.which(tool) is None]


def ensure_tree(log: Path | None = None, suite: str = SUITE) -> Path:
    """The cached root tree, debootstrapped first if it is not there yet (see `cached_tree`)."""
    final = tree_path(suite)

    def debootstrap(work: Path) -> None:
        command = [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(INCLUDE)}",
            suite,
            str(work),
        ]
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise HarnessError(f"debootstrap failed ({result.returncode}); see {log}")
        # Drop the downloaded .debs: each ephemeral boot would copy them for nothing.
        shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
        (work / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        # A fixed machine id keeps journald's files in one place across boots of the ephemeral copy.
        (work / "etc/machine-id").write_text(hashlib.md5(final.name.encode()).hexdigest() + "\n")

    lock = CACHE_PARENT / f".insiders-test-root-{tree_key(suite)}.lock"
    return cached_tree(final, lock, debootstrap)


def cached_tree(final: Path, lock_path: Path, make: Callable[[Path], None]) -> Path:
    """`final`, made first by `make(work)` if it is not there yet.

    `make` fills `work`, a temporary name renamed to `final` only once it returned, so an
    interrupted build is never reused; the lock at `lock_path` keeps two test runs from building it
    at once (the second finds the first's).
    """
    if final.is_dir():
        return final
    CACHE_PARENT.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final
        work = final.with_name(f"{final.name}.partial")
        if work.exists():
            shutil.rmtree(work)
        make(work)
        work.rename(final)
    return final


def require_root_and_host_tools(what: str) -> None:
    """Skip unless root (debootstrap and systemd-nspawn need it); fail when a host tool is missing,
    saying what to install. `what` names the tests, for the skip's reason."""
    import pytest  # here: `make deb` runs this module with the system's python3, without pytest

    if os.geteuid() != 0:
        pytest.skip(f"{what} need root (debootstrap, systemd-nspawn)")
    if missing := missing_host_tools():
        pytest.fail(
            f"missing {', '.join(missing)}: apt-get install {' '.join(HOST_PACKAGES)} "
            "(`make pytest` does it)"
        )


class Container:
    """A booted ephemeral copy of the tree; `run` executes a command inside it through nsenter."""

    def __init__(
        self, tree: Path, log: Path, binds: Sequence[Bind] = (), suite: str = SUITE
    ) -> None:
        self.tree = tree
        self.log = log
        self.binds = list(binds)
        self.suite = suite
        # Two suites may be up at once in one test run: each its own machine name.
        self.name = f"insiders-ci-{suite}-{os.getpid()}"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0

    # -- lifetime -----------------------------------------------------------------------------

    def boot(self, timeout: float = 120.0) -> float:
        """Boot and wait for `is-system-running`; returns the seconds it took."""
        started = time.monotonic()
        command = [
            "systemd-nspawn",
            "-D",
            str(self.tree),
            "--ephemeral",
            "--register=no",
            "--keep-unit",
            "-b",
            "--console=passive",
            f"--machine={self.name}",
            # nspawn's own seccomp filter (systemd 252 on the host) predates Landlock and refuses
            # it with EPERM; on a machine systemd boots, only the unit's own filter applies.
            "--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
        ]
        command += [
            f"--bind{'-ro' if read_only else ''}={host}:{inside}"
            for host, inside, read_only in self.binds
        ]
        with self.log.open("ab") as out:
            self._nspawn = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = started + timeout
        while not self.leader:
            if self._nspawn.poll() is not None:
                code = self._nspawn.returncode
                raise HarnessError(f"systemd-nspawn exited {code}; see {self.log}")
            if time.monotonic() > deadline:
                raise HarnessError(f"no container leader after {timeout}s; see {self.log}")
            self.leader = self._find_leader()
            if not self.leader:
                time.sleep(0.05)
        while True:
            result = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout
            )
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"container not up: {state!r}; see {self.log}")
            time.sleep(0.2)  # "Failed to connect to bus" while PID 1 is still starting
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise HarnessError(f"container booted degraded:\n{failed}")
        return time.monotonic() - started

    def _find_leader(self) -> int:
        assert self._nspawn is not None
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        try:
            pids = children.read_text().split()
        except FileNotFoundError:
            return 0
        for pid in pids:
            # The leader is the container's PID 1: systemd, once it has exec'd.
            with contextlib.suppress(FileNotFoundError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def poweroff(self, timeout: float = 60.0) -> None:
        """Shut the container down; kill nspawn if it does not go in time. Safe to call twice."""
        if self._nspawn is None or self._nspawn.poll() is not None:
            return
        started = time.monotonic()
        if self.leader:
            self.run(["systemctl", "poweroff"], check=False, timeout=30)
        try:
            self._nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._nspawn.pid, signal.SIGKILL)
            self._nspawn.wait(10)
        took = time.monotonic() - started
        if took > 10:
            print(f"\ncontainer poweroff took {took:.1f}s; see {self.log}", file=sys.stderr)

    # -- driving ------------------------------------------------------------------------------

    def run(
        self,
        command: Sequence[str],
        *,
        check: bool = True,
        user: str | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (as `user` when given) and capture its output.

        nsenter would hand the host's environment on, so the command gets a clean one of its own.
        """
        full_env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
        prefix = ["nsenter", "-t", str(self.leader), "-a"]
        if user is not None:
            uid = self.uid(user)
            full_env["HOME"] = f"/home/{user}"
            full_env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"
            full_env["USER"] = full_env["LOGNAME"] = user
            # runuser keeps the environment it is given (no -l), which is what we want here.
            prefix += ["runuser", "-u", user, "--"]
        full_env.update(env or {})
        command_env = ["env", "-i", *(f"{k}={v}" for k, v in full_env.items())]
        result = subprocess.run(
            [*prefix, *command_env, *command],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
            env={"PATH": os.environ.get("PATH", CONTAINER_PATH)},
            # Its own process group: nothing run inside can signal the test run's group.
            start_new_session=True,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"{' '.join(command)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def sh(self, script: str, **kwargs: object) -> str:
        """Run a shell snippet inside; its stdout (raises on a non-zero exit unless check=False)."""
        return self.run(["sh", "-ec", script], **kwargs).stdout  # type: ignore[arg-type]

    def uid(self, user: str) -> int:
        line = self.path("/etc/passwd").read_text().splitlines()
        for entry in line:
            fields = entry.split(":")
            if fields[0] == user:
                return int(fields[2])
        raise HarnessError(f"no user {user} in the container")

    def path(self, inside: str) -> Path:
        """A path inside the running container, reachable from the host."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def show(self, unit: str, *props: str, user: str | None = None) -> dict[str, str]:
        scope = ["--user"] if user else []
        out = self.run(
            ["systemctl", *scope, "show", unit, *(f"--property={p}" for p in props)], user=user
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(
        self, unit: str, prop: str, want: str, *, timeout: float = 60.0, user: str | None = None
    ) -> float:
        """Poll `systemctl show` until `prop` is `want`; returns the seconds waited."""
        started = time.monotonic()
        while True:
            value = self.show(unit, prop, user=user).get(prop)
            if value == want:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise HarnessError(f"{unit} {prop}={value!r}, still not {want!r} after {timeout}s")
            time.sleep(0.05)


@contextlib.contextmanager
def booted(
    tree: Path, log: Path, binds: Sequence[Bind] = (), suite: str = SUITE
) -> Iterator[Container]:
    container = Container(tree, log, binds, suite)
    try:
        container.boot()
        yield container
    finally:
        container.poweroff()


if __name__ == "__main__":
    started = time.monotonic()
    suite = sys.argv[1] if len(sys.argv) > 1 else SUITE
    tree = ensure_tree(Path("/dev/stderr"), suite)
    print(tree, f"{time.monotonic() - started:.1f}s", file=sys.stderr)
