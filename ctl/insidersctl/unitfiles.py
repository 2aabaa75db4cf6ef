"""`insidersctl server enable|disable`: systemd units for this installation, the systemctl way.

The units in units/ name /usr/bin/insidersd, which only the Debian package installs. A pip, pipx
or venv install gets the same files as data (insidersctl.installation), and `server enable` writes
them to the service manager's own directory (~/.config/systemd/user, or /etc/systemd/system as
root) with ExecStart=/ExecReload= naming this installation's scripts, then runs `systemctl
daemon-reload` and `systemctl enable --now insiders.service`. Each file it writes starts with
MARKER: a file without it is someone else's and is replaced only with --force. It prints every
file it wrote and every command it ran; run again, it changes nothing. `server disable` stops and
disables the units and removes the files it wrote.

Where a package installed the units for this very insidersd (the Debian package), nothing is
written: the package's units are enabled. Exit status: 0 done, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from insidersctl import installation
from insidersctl import protocol as p
from insidersctl.client import Connection
from insidersctl.context import EXIT_FAILED, EXIT_OK, Context, note, out
from insidersctl.errors import ClientError, UnitError, Usage
from insidersctl.paths import SYSTEM_SOCKET
from insidersctl.service import UNIT, _run, _shown, systemctl, unit_loaded

MARKER = "# Written by `insidersctl server enable`"
# What units/ names, replaced by this installation's scripts (the Debian package's paths).
TEMPLATE_SCRIPTS = {"/usr/bin/insidersd": "insidersd", "/usr/bin/insidersctl": "insidersctl"}
EXEC_KEYS = ("ExecStart", "ExecReload")
SYSTEM_DIRECTORY = Path("/etc/systemd/system")
SYSUSERS = Path("/etc/sysusers.d/insiders.conf")
VENDOR_SYSUSERS = (Path("/usr/lib/sysusers.d/insiders.conf"),)
# ProtectHome=yes in the system unit: insidersd cannot run from there.
HIDDEN_FROM_THE_SYSTEM_UNIT = (Path("/home"), Path("/root"), Path("/run/user"))
# The system unit's Type=notify-reload is known from this systemd on.
NOTIFY_RELOAD = 253
# A user whose manager outlives their logins has a file here (loginctl enable-linger).
LINGER = Path("/var/lib/systemd/linger")


# -- the files: pure ---------------------------------------------------------------------------


def exec_word(path: Path) -> str:
    """`path` as the first word of an Exec line: % and $ doubled, quoted if it has blanks."""
    text = str(path).replace("%", "%%").replace("$", "$$")
    if any(c in text for c in " \t\"'\\"):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(template: str, scripts: Mapping[str, Path]) -> str:
    """The unit file `template` for this installation: its Exec lines name `scripts` (insidersd,
    insidersctl -> absolute path), and MARKER comes first, so that the file is known as ours."""
    lines = [f"{MARKER} for {scripts['insidersd']}; `insidersctl server disable` removes it.\n"]
    for line in template.splitlines(keepends=True):
        key, equals, value = line.partition("=")
        if equals and key in EXEC_KEYS:
            first, blank, rest = value.rstrip("\n").partition(" ")
            if first in TEMPLATE_SCRIPTS:
                line = f"{key}={exec_word(scripts[TEMPLATE_SCRIPTS[first]])}{blank}{rest}\n"
        lines.append(line)
    return "".join(lines)


def ours(text: str) -> bool:
    return text.startswith(MARKER)


def runs(text: str, insidersd: Path) -> bool:
    """Whether the unit file `text` starts `insidersd`."""
    return any(
        line.partition("=")[2].split(" ", 1)[0] == exec_word(insidersd)
        for line in text.splitlines()
        if line.startswith("ExecStart=")
    )


class Change(NamedTuple):
    path: Path
    text: str
    state: str  # new, updated (one of ours), unchanged, foreign (not ours: needs --force)


def plan(directory: Path, rendered: Mapping[str, str]) -> list[Change]:
    """What writing `rendered` (name -> text) into `directory` would do to each file."""
    changes = []
    for name, text in rendered.items():
        path = directory / name
        try:
            present = path.read_text()
        except FileNotFoundError:
            state = "new"
        else:
            same = present == text
            state = "unchanged" if same else "updated" if ours(present) else "foreign"
        changes.append(Change(path, text, state))
    return changes


def hidden_from_system_unit(paths: Sequence[Path]) -> Path | None:
    """The first of `paths` that ProtectHome=yes hides from the system service."""
    for path in paths:
        if any(path == top or top in path.parents for top in HIDDEN_FROM_THE_SYSTEM_UNIT):
            return path
    return None


def interpreter(script: Path) -> Path | None:
    """The interpreter a script's #! line names (a venv's python, usually)."""
    try:
        with script.open("rb") as file:
            first = file.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].split()
    return Path(os.fsdecode(words[0])) if words else None


# -- where they go -----------------------------------------------------------------------------


def user_directory(env: Mapping[str, str] = os.environ) -> Path:
    """Where the user's manager reads the user's own units ($XDG_CONFIG_HOME/systemd/user)."""
    config = env.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def vendor_unit(scope: str) -> Path | None:
    """The service unit a package installed for every user (or the system), if any."""
    for top in (Path("/usr/lib/systemd"), Path("/lib/systemd")):
        path = top / scope / UNIT
        if path.is_file():
            return path
    return None


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# -- the commands ------------------------------------------------------------------------------


def _scripts() -> dict[str, Path]:
    scripts = {}
    for name in TEMPLATE_SCRIPTS.values():
        path = installation.script(name)
        if path is None:
            raise UnitError(
                f"this installation has no {name} script (where is insiders installed?)"
            )
        scripts[name] = path
    return scripts


def _manager(user: bool) -> int:
    """The service manager's systemd version; UnitError unless systemctl is here and it
    answers."""
    command = systemctl("show", "--property=Version", "--value", user=user)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)
    except FileNotFoundError:
        insidersd = installation.command("insidersd")
        raise UnitError(
            f"there is no systemctl here: run insidersd yourself (`{insidersd}`)"
        ) from None
    except subprocess.TimeoutExpired:
        raise UnitError(f"`{_shown(command)}` did not answer in 15 s") from None
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        which = "user's service manager" if user else "service manager (systemd)"
        raise UnitError(f"the {which} does not answer (`{_shown(command)}`: {said})")
    digits = re.match(r"\d+", result.stdout.strip())  # "257.9-1~deb13u1"
    return int(digits.group()) if digits else 0


def _ran(command: list[str]) -> bool:
    status = _run(command)
    if status != 0:
        note(f"insidersctl: `{_shown(command)}` failed (exit status {status})")
        return False
    out(f"ran `{_shown(command)}`")
    return True


def _runs_by_hand(socket: Path) -> int | None:
    """The pid of an insidersd that answers at `socket`, where the unit's would, started
    without systemd."""
    try:
        connection = Connection.open(socket, timeout=5.0)
    except ClientError:
        return None
    try:
        where = connection.call(p.Logs(), timeout=5.0)
        pid = connection.welcome.pid
    except ClientError:
        return None
    finally:
        connection.close()
    if isinstance(where, p.LogsLocation) and where.journal and where.unit:
        return None  # systemd runs it: `enable --now` leaves it be
    return pid


def _active(user: bool) -> bool:
    command = systemctl("is-active", "--quiet", UNIT, user=user)
    return subprocess.run(command, timeout=15, check=False).returncode == 0


def _check_scope(user: bool) -> None:
    if not user and os.geteuid() != 0:
        ctl = installation.command("insidersctl", sudo=True)
        raise Usage(
            f"the system units go to /etc/systemd/system: run it as root (`sudo {ctl} server "
            f"enable`), or add --user for your own daemon"
        )


def enable(ctx: Context) -> int:
    user: bool = ctx.args.user
    _check_scope(user)
    try:
        # The user's daemon's socket as the client finds it (--socket, -c, the XDG default).
        socket = ctx.candidates()[0] if user else SYSTEM_SOCKET
        return _enable(user, socket, force=ctx.args.force, start=not ctx.args.no_start)
    except UnitError as error:
        note(f"insidersctl: {error}")
        return EXIT_FAILED


def _enable(user: bool, socket: Path, *, force: bool, start: bool) -> int:
    scope = "user" if user else "system"
    version = _manager(user)
    scripts = _scripts()
    if not user and 0 < version < NOTIFY_RELOAD:
        # An older systemd runs a unit of a Type= it does not know as Type=simple (active before
        # the daemon listens, and no reload): the user unit is Type=notify for those.
        raise UnitError(
            f"the system unit is Type=notify-reload, which systemd knows from {NOTIFY_RELOAD} "
            f"on; this is systemd {version}: use --user (its unit runs on 249 and later)"
        )
    if not user:
        # A venv's python is often a link to the interpreter it was made from (pyenv's in
        # /root, say): the service must reach that one too.
        pythons = [path for path in map(interpreter, scripts.values()) if path is not None]
        hidden = hidden_from_system_unit(
            [*scripts.values(), *pythons, *(path.resolve() for path in pythons)]
        )
        if hidden:
            raise UnitError(
                f"the system service cannot run {hidden}: its unit hides /home, /root and "
                "/run/user (ProtectHome=yes); install insiders elsewhere (a venv in "
                "/opt/insiders, say) or use --user"
            )
    vendor = vendor_unit(scope)
    if vendor is not None and runs(vendor.read_text(), scripts["insidersd"]):
        out(f"{vendor} (installed with insiders) runs this insidersd: nothing to write")
        written = False
    else:
        written = _write_units(scope, scripts, force=force, user=user)
    if written and not _ran(systemctl("daemon-reload", user=user)):
        return EXIT_FAILED
    if written and _active(user):
        # `enable --now` leaves a running service be: it runs the unit it was started with.
        restart = _shown(systemctl("restart", "insiders", user=user))
        note(f"insidersctl: insiders.service runs as it was started: `{restart}` runs this one")
    if start and (pid := _runs_by_hand(socket)) is not None:
        start = False
        note(
            f"insidersctl: insidersd runs already, started without systemd (pid {pid}): the unit "
            f"is enabled, not started; stop that one (`{installation.command('insidersctl')} "
            "server stop`), then "
            f"`{_shown(systemctl('start', 'insiders', user=user))}`"
        )
    command = systemctl("enable", *(["--now"] if start else []), UNIT, user=user)
    if not _ran(command):
        return EXIT_FAILED
    if user and not (LINGER / pwd.getpwuid(os.getuid()).pw_name).exists():
        out(
            "it runs while you are logged in; to keep it running after you log out: "
            "loginctl enable-linger"
        )
    return EXIT_OK


def _write_units(scope: str, scripts: Mapping[str, Path], *, force: bool, user: bool) -> bool:
    """Write the units of `scope`; whether any file changed. UnitError for a foreign file."""
    templates = installation.unit_templates(scope)
    if not templates:
        raise UnitError(
            f"this installation has no unit files (share/insiders/units/{scope}): reinstall it"
        )
    directory = user_directory() if user else SYSTEM_DIRECTORY
    changes = plan(directory, {name: render(text, scripts) for name, text in templates.items()})
    foreign = [c.path for c in changes if c.state == "foreign"]
    if foreign and not force:
        raise UnitError(
            f"{', '.join(map(str, foreign))}: not written by insidersctl, left as it is "
            "(--force replaces it)"
        )
    written = False
    for change in changes:
        if change.state == "unchanged":
            out(f"unchanged {change.path}")
            continue
        atomic_write(change.path, change.text)
        written = True
        out(f"{'replaced' if change.state == 'foreign' else 'wrote'} {change.path}")
    if not user:
        written |= _write_sysusers()
    return written


def _write_sysusers() -> bool:
    """The system user `insiders` (units/system/insiders.sysusers), made by systemd-sysusers."""
    if any(path.exists() for path in VENDOR_SYSUSERS):
        return False
    text = installation.sysusers_template()
    if text is None:
        raise UnitError("this installation has no insiders.sysusers: reinstall it")
    # The user stays when the units go (as with the Debian package): files may be owned by it.
    text = f"{MARKER}: the user of insiders.service.\n{text}"
    changed = not SYSUSERS.exists() or SYSUSERS.read_text() != text
    if changed:
        atomic_write(SYSUSERS, text)
        out(f"wrote {SYSUSERS}")
    try:
        pwd.getpwnam("insiders")
    except KeyError:
        changed = True
    if changed and not _ran(["systemd-sysusers", str(SYSUSERS)]):
        raise UnitError("the system user insiders could not be made")
    return changed


def disable(ctx: Context) -> int:
    user: bool = ctx.args.user
    _check_scope(user)
    try:
        return _disable(user)
    except UnitError as error:
        note(f"insidersctl: {error}")
        return EXIT_FAILED


def _disable(user: bool) -> int:
    scope = "user" if user else "system"
    _manager(user)
    templates = installation.unit_templates(scope)
    names = sorted(templates) if templates else [UNIT]
    loaded = [name for name in names if unit_loaded(user=user, unit=name)]
    if not loaded:
        out(f"no insiders unit is installed for {'this user' if user else 'the system'}")
        return EXIT_OK
    if not _ran(systemctl("disable", "--now", *loaded, user=user)):
        return EXIT_FAILED
    directory = user_directory() if user else SYSTEM_DIRECTORY
    removed = False
    for name in names:
        path = directory / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        if ours(text):
            path.unlink()
            removed = True
            out(f"removed {path}")
        else:
            out(f"kept {path}: not written by insidersctl")
    if removed and not _ran(systemctl("daemon-reload", user=user)):
        return EXIT_FAILED
    return EXIT_OK
