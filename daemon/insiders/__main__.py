"""insidersd: run the index, the watcher and the control server in one trio process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path

import msgspec
import trio

from insiders.errors import ConfigError, RestoreError, UnfinishedRestore, UpstreamLoop

from .config import (
    Directories,
    PathSettings,
    Settings,
    UpstreamSettings,
    default_config_path,
    load_settings,
    resolve_directories,
)
from .fsutil import PRIVATE_UMASK
from .logfile import LOG_FILE, log_to_file
from .logs import setup_logging, stderr_is_journal
from .options import parser

log = logging.getLogger("insiders")


def settings_from(args: argparse.Namespace) -> Settings:
    """The config file, then the flags over it (again at each reload: flags keep winning)."""
    config_path: Path = args.config or default_config_path()
    settings = load_settings(config_path, required=args.config is not None)
    replace = msgspec.structs.replace
    server, paths, upstream = settings.server, settings.paths, settings.upstream
    if args.host is not None:
        server = replace(server, host=args.host)
    if args.port is not None:
        server = replace(server, port=args.port)
    for flag in ("data_dir", "cache_dir", "runtime_dir"):
        if getattr(args, flag) is not None:
            paths = replace(paths, **{flag: getattr(args, flag)})
    if args.upstream is not None:
        upstream = replace(upstream, url=args.upstream)
    if args.upstream_mode is not None:
        upstream = UpstreamSettings(
            **{**msgspec.structs.asdict(upstream), "mode": args.upstream_mode}
        )
    log_level = args.log_level or settings.log_level
    settings = replace(settings, server=server, paths=paths, upstream=upstream, log_level=log_level)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything is written: the data, the cache, the logs are the daemon's alone (see fsutil).
    os.umask(PRIVATE_UMASK)
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as error:
        print(f"insidersd: {error}", file=sys.stderr)
        # The log file of the directories the flags and environment name: where `insidersctl
        # logs` looks when no daemon answers.
        dirs = resolve_directories(PathSettings(data_dir=args.data_dir))
        with _log_file(dirs):
            logging.getLogger("insiders").critical("cannot start: %s", error)
        return 2
    if args.restore_from is not None and args.restore_from not in settings.mirrors:
        known = ", ".join(sorted(settings.mirrors)) or "none"
        print(
            f"insidersd: --restore-from {args.restore_from}: no [mirrors.{args.restore_from}] "
            f"in the configuration (configured: {known})",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log_level)
    return serve(args, settings, resolve_directories(settings.paths))


def serve(args: argparse.Namespace, settings: Settings, dirs: Directories) -> int:
    """Run the daemon until it stops; the exit status."""
    from .app import run

    status = 0
    ready: list[bool] = []
    # The whole run goes to the log file, the failures to start included.
    with _log_file(dirs):
        try:
            trio.run(
                partial(run, restore=args.restore_from),
                settings,
                dirs,
                partial(settings_from, args),
                partial(ready.append, True),
            )
        except* Exception as group:
            status = report_failures(group, started=bool(ready))
    return status


# The kinds of failure in the order they are reported; the last kind present sets the status.
FAILURE_KINDS: tuple[type[Exception], ...] = (
    UnfinishedRestore,
    RestoreError,
    ConfigError,
    UpstreamLoop,
    OSError,
    Exception,
)


def report_failures(group: BaseExceptionGroup[Exception], *, started: bool) -> int:
    """Log the failures that ended the run, each in one record; the exit status."""
    status = 0
    rest: BaseExceptionGroup[Exception] | None = group
    for kind in FAILURE_KINDS:
        if rest is None:
            break
        matched, rest = rest.split(kind)
        for failure in leaves(matched) if matched is not None else ():
            status = report_failure(failure, started=started)
    return status


# Failures said in one line, without a traceback: what could not be done, and the exit status.
# A ConfigError is a setting that cannot be served safely or at all (exposure, TLS files).
IN_ONE_LINE: tuple[tuple[type[BaseException], str, int], ...] = (
    (RestoreError, "cannot restore", 1),
    (UnfinishedRestore, "cannot start", 1),
    (ConfigError, "cannot start", 2),
)


def report_failure(failure: BaseException, *, started: bool) -> int:
    """One failure in words (a traceback only for what the words cannot explain); its status."""
    for kind, words, status in IN_ONE_LINE:
        if isinstance(failure, kind):
            log.critical("%s: %s", words, failure)
            return status
    match failure:
        case UpstreamLoop():
            log.error("%s", failure)
            return 2
        case OSError() if not started:
            # Typically the port is taken or a directory is not writable: say which, no traceback.
            log.critical("cannot start: %s", failure)
            return 1
        case OSError():
            log.critical("insidersd stopped: %s", failure, exc_info=failure)
            return 1
        case _:
            # A failure of the daemon's own core: name the real cause, not the nursery that held it.
            name = type(failure).__name__
            log.critical("insidersd stopped: %s: %s", name, failure, exc_info=failure)
            return 1


def leaves(error: BaseException) -> list[BaseException]:
    """The innermost exceptions of a (nested) exception group."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def _log_file(dirs: Directories) -> ExitStack:
    """DATA/insidersd.log for records logged inside the context, unless the journal has them.

    A data directory that cannot be written is no reason to fail here: the daemon says so itself.
    """
    stack = ExitStack()
    if not stderr_is_journal():
        with suppress(OSError):
            stack.enter_context(log_to_file(dirs.data / LOG_FILE))
    return stack


if __name__ == "__main__":
    sys.exit(main())
