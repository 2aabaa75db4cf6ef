"""git, run as a subprocess: list tags, keep a bare mirror, check a tag out for a build.

Secrets never reach argv (visible in `ps`) nor messages: an HTTPS token goes to git through
GIT_ASKPASS and an environment variable of the git process alone, and URLs are shown without any
user information they carry.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import trio

from insiders.errors import GitError
from insiders.repos.spec import GIT_ALLOW_PROTOCOL
from insiders.watcher.tags import parse_ls_remote

ASKPASS_SCRIPT = """#!/bin/sh
# Answers git's credential prompts from the environment: no secret on any command line.
case "$1" in
  Username*) printf '%s\\n' "${INSIDERS_GIT_USERNAME:-x-access-token}" ;;
  *) printf '%s\\n' "$INSIDERS_GIT_PASSWORD" ;;
esac
"""


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str, *secrets: str | None) -> str:
    """Drop user information from URLs and any known secret from a text."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def git_env(askpass: Path | None, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",  # never wait for a person at a prompt
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
        # The SPEC grammar's protocols only, whatever the registry holds (an entry from before
        # `repos add` refused ext::, fd::, x::) and whatever a repository's config says.
        GIT_ALLOW_PROTOCOL=GIT_ALLOW_PROTOCOL,
    )
    # Keys or an agent yes, a passphrase prompt no: a daemon has nobody to ask.
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
    if token and askpass is not None:
        env.update(GIT_ASKPASS=str(askpass), INSIDERS_GIT_PASSWORD=token)
    return env


def write_askpass(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "git-askpass"
    if not path.exists() or path.read_text() != ASKPASS_SCRIPT:
        path.write_text(ASKPASS_SCRIPT)
        path.chmod(0o700)
    return path


async def git(*args: str, env: dict[str, str], token: str | None = None) -> str:
    """Run git; its stdout, or GitError with its stderr (redacted). Callers set the deadline.

    Every URL and path goes after `--`: a repository named `--upload-pack=CMD` or `-oProxyCommand=`
    must reach git as an operand, never as an option that runs a command.
    """
    try:
        result = await trio.run_process(
            ["git", *args],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except OSError as error:
        raise GitError(f"cannot run git: {error.strerror}") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        detail = "; ".join(line.strip() for line in lines if line.strip())[-600:] or "no message"
        raise GitError(redact(f"git {args[0]} failed: {detail}", token))
    return result.stdout.decode(errors="replace")


async def list_tags(url: str, *, env: dict[str, str], token: str | None) -> dict[str, str]:
    """{tag: commit} of a remote, without cloning anything."""
    output = await git("ls-remote", "--tags", "--refs", "--", url, env=env, token=token)
    return parse_ls_remote(output)


async def update_mirror(
    url: str, mirror: Path, *, env: dict[str, str], token: str | None
) -> Path | None:
    """Fetch the tags and their history into a bare mirror (incremental after the first).

    A mirror git cannot read (a file in its place, its objects gone: a crash, a full disk, a
    hand) would fail every check until someone deletes it: it is moved aside and made again, once
    per check. Where it was moved to, if it was (the caller says so in the log).
    """
    moved = None
    if not await _readable(mirror, env):
        if await trio.to_thread.run_sync(os.path.lexists, mirror):
            moved = await trio.to_thread.run_sync(_move_aside, mirror)
        await trio.Path(mirror).mkdir(parents=True)
        await git("init", "--quiet", "--bare", "--", str(mirror), env=env)
    refspec = "+refs/tags/*:refs/tags/*"
    fetch = ["fetch", "--quiet", "--prune", "--force", "--no-auto-gc", "--", url, refspec]
    await git("--git-dir", str(mirror), *fetch, env=env, token=token)
    return moved


async def _readable(mirror: Path, env: dict[str, str]) -> bool:
    """The mirror is a repository git can read (False when there is none yet)."""
    if not await trio.to_thread.run_sync(os.path.lexists, mirror):
        return False
    try:
        await git("--git-dir", str(mirror), "rev-parse", "--is-bare-repository", env=env)
    except GitError:
        return False
    return True


def _move_aside(mirror: Path) -> Path:
    # A name no repository key has (keys have no dot), beside the mirror, to look into later.
    aside = mirror.with_name(f"{mirror.name}.unreadable-{time.time_ns()}")
    os.replace(mirror, aside)
    return aside


async def checkout(mirror: Path, tag: str, dest: Path, *, env: dict[str, str]) -> None:
    """A work tree of `tag` in `dest`, with the tags and history version plugins need (scm, vcs)."""
    quiet = {**env, "GIT_CONFIG_PARAMETERS": "'advice.detachedHead=false'"}
    clone = ["clone", "--quiet", "--shared", "--branch", tag, "--", str(mirror), str(dest)]
    await git(*clone, env=quiet)


async def head_commit(work_tree: Path, *, env: dict[str, str]) -> tuple[str, int]:
    """The checked-out commit and its committer time (the tag's SOURCE_DATE_EPOCH)."""
    output = await git("-C", str(work_tree), "log", "-1", "--format=%H %ct", "HEAD", "--", env=env)
    commit, time = output.split()
    return commit, int(time)
