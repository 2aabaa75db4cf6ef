"""The watched repositories: what `insidersctl repos add` records and the watcher acts on.

A repository is named by a SPEC, parsed here by pure functions:

    OWNER/REPO[:DIST]          a GitHub repository
    URL[:DIST]                 any git URL: https://, http://, ssh://, git://, file://
    [USER@]HOST:PATH[:DIST]    scp-like ssh (git's rule: no slash before the first colon)
    PATH[:DIST]                a local repository: /abs, ./rel, ../rel or ~/...

DIST is the distribution the repository builds. It may be left out when it can be read from the
repository without fetching it: from a local one's pyproject.toml (work tree, else HEAD).

The registry is one JSON file in the data directory, replaced atomically on every change. Each
repository carries its options (which versions to build, where to publish) and a `RepoState` that
the watcher fills in (last check, newest tag, last published version, last error and its log).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import trio

from insiders.errors import RepoError, SpecError
from insiders.fsutil import atomic_write
from insiders.names import NormalizedName, is_valid_name, normalize, parse_version

log = logging.getLogger(__name__)

REPOS_FILE = "repos.json"
FORMAT_VERSION = 1

SourceKind = Literal["github", "git", "path"]
VersionPolicy = Literal["newest", "all", "since"]

_SCHEMES = ("https", "http", "ssh", "git", "file", "git+ssh", "ssh+git")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
# GitHub's own rules: owners are letters, digits and single inner hyphens, at most 39 long.
_GITHUB_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_RELATIVE = re.compile(r"^\.\.?(?:/|:|$)")
_DASH_HOST = "a host does not start with '-' (ssh would take it as an option)"
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Source(msgspec.Struct, frozen=True, kw_only=True):
    kind: SourceKind
    # github: OWNER/REPO; git: the URL as given; path: an absolute, normalised path
    location: str

    @property
    def git_url(self) -> str:
        """What git fetches from (the watcher may prefer the API or ssh for GitHub)."""
        if self.kind == "github":
            return f"https://github.com/{self.location}.git"
        return self.location

    @property
    def local_path(self) -> Path | None:
        """The repository's directory when it is on this machine (a path or a file:// URL)."""
        if self.kind == "path":
            return Path(self.location)
        if self.location.startswith("file://"):
            return Path(_file_url_path(self.location))
        return None


class ParsedSpec(msgspec.Struct, frozen=True, kw_only=True):
    source: Source
    dist: str | None


# -- parsing (pure) ----------------------------------------------------------------------------


def parse_spec(text: str, cwd: str | None = None) -> ParsedSpec:
    """Split SPEC into its source and optional DIST; relative paths are resolved against cwd."""
    spec = text.strip()
    if not spec:
        raise SpecError("empty SPEC: give OWNER/REPO:DIST, a git URL or a path")
    if any(c.isspace() for c in spec):
        raise SpecError(f"{text!r}: a SPEC has no spaces")
    if spec.startswith("-"):
        # git would read it as an option (`--upload-pack=CMD` runs CMD): never a repository.
        raise SpecError(f"{text!r}: a SPEC does not start with '-' (for a path, write ./{spec})")
    if match := _URL.match(spec):
        return _parse_url(spec, match.group("scheme").lower(), match.group("rest"))
    if spec.startswith(("/", "~")) or _RELATIVE.match(spec):
        return _parse_path(spec, cwd)
    before_colon = spec.partition(":")[0]
    if ":" in spec and "/" not in before_colon:
        return _parse_scp(spec)
    return _parse_github(spec)


def _split_dist(body: str, whole: str) -> tuple[str, str | None]:
    """`...:DIST` -> (..., DIST) when the part after the last colon has no slash."""
    head, colon, tail = body.rpartition(":")
    if not colon or "/" in tail:
        return body, None
    if not tail:
        raise SpecError(f"{whole!r}: nothing after the last ':' (leave it out, or give DIST)")
    if not is_valid_name(tail):
        raise SpecError(
            f"{whole!r}: {tail!r} is not a valid distribution name "
            "(letters, digits and . _ - inside)"
        )
    return head, tail


def _parse_url(spec: str, scheme: str, rest: str) -> ParsedSpec:
    if scheme not in _SCHEMES:
        raise SpecError(
            f"{spec!r}: git URLs here use https, http, ssh, git or file, not {scheme}://"
        )
    authority, slash, path = rest.partition("/")
    path, dist = _split_dist(path, spec)
    if "@" in authority and ":" in authority.rpartition("@")[0]:
        raise SpecError(
            f"{spec!r}: the URL carries a password; it would be stored and shown: remove it and "
            "let git's credential helper or the configured token authenticate"
        )
    if scheme == "file":
        if authority not in {"", "localhost"}:
            raise SpecError(f"{spec!r}: a file:// URL names a path on this machine: file:///PATH")
        if not path.strip("/"):
            raise SpecError(f"{spec!r}: no repository path after file://")
        url = f"file:///{path.strip('/')}"
        return ParsedSpec(source=Source(kind="git", location=url), dist=dist)
    host = authority.rpartition("@")[2]
    if not host or host.startswith(":"):
        raise SpecError(f"{spec!r}: no host in the URL")
    if authority.startswith("-") or host.startswith("-"):
        raise SpecError(f"{spec!r}: {_DASH_HOST}")
    if not slash or not path.strip("/"):
        raise SpecError(f"{spec!r}: no repository path after the host")
    url = f"{spec[: len(scheme) + 3]}{authority}/{path}"
    return ParsedSpec(source=Source(kind="git", location=url), dist=dist)


def _parse_scp(spec: str) -> ParsedSpec:
    host_part, _, path = spec.partition(":")
    path, dist = _split_dist(path, spec)
    user, at, host = host_part.rpartition("@")
    if not host or (at and not user):
        raise SpecError(f"{spec!r}: no host before ':' (scp-like ssh is [USER@]HOST:PATH)")
    if host_part.startswith("-") or host.startswith("-"):
        raise SpecError(f"{spec!r}: {_DASH_HOST}")
    if not path.strip("/"):
        raise SpecError(f"{spec!r}: no repository path after {host_part}:")
    return ParsedSpec(source=Source(kind="git", location=f"{host_part}:{path}"), dist=dist)


def _parse_path(spec: str, cwd: str | None) -> ParsedSpec:
    body, dist = _split_dist(spec, spec)
    path = os.path.expanduser(body)
    if not os.path.isabs(path):
        if not cwd or not os.path.isabs(cwd):
            raise SpecError(f"{spec!r}: a relative path needs the client's working directory")
        path = os.path.join(cwd, path)
    return ParsedSpec(source=Source(kind="path", location=os.path.normpath(path)), dist=dist)


def _parse_github(spec: str) -> ParsedSpec:
    body, dist = _split_dist(spec, spec)
    parts = body.split("/")
    if len(parts) == 1:
        raise SpecError(
            f"{spec!r} names no repository: use OWNER/REPO for GitHub, a git URL, "
            f"or ./{body} for a directory here"
        )
    if len(parts) > 2:
        raise SpecError(
            f"{spec!r}: OWNER/REPO has one slash; a local path starts with /, ./ or ~/, "
            "and other hosts need a URL (https://HOST/PATH or git@HOST:PATH)"
        )
    owner, repo = parts
    repo = repo.removesuffix(".git")
    if not _GITHUB_OWNER.match(owner):
        raise SpecError(
            f"{spec!r}: {owner!r} is not a GitHub owner (letters, digits and single hyphens, "
            "at most 39)"
        )
    if not _GITHUB_REPO.match(repo) or repo in {".", ".."}:
        raise SpecError(f"{spec!r}: {repo!r} is not a GitHub repository name")
    return ParsedSpec(source=Source(kind="github", location=f"{owner}/{repo}"), dist=dist)


def _file_url_path(url: str) -> str:
    rest = url.removeprefix("file://")
    return "/" + rest.removeprefix("localhost").lstrip("/")


# -- reading a local repository (blocking: run in a thread) -------------------------------------


def check_local(path: Path) -> None:
    """Refuse a path that is not a git repository the daemon can read."""
    if not path.exists():
        raise RepoError(f"{path}: no such directory (as seen by insidersd)")
    if not path.is_dir():
        raise RepoError(f"{path}: not a directory")
    result = _git(path, "rev-parse", "--git-dir")
    if result.returncode != 0:
        raise RepoError(f"{path}: not a git repository ({_first_line(result.stderr)})")


def read_dist_name(path: Path) -> str:
    """The distribution name a local repository declares: pyproject.toml or setup.cfg.

    The work tree's files first (what the user sees), else the committed ones (a bare repository).
    """
    tried: list[str] = []
    for filename in ("pyproject.toml", "setup.cfg"):
        text = _read_text(path / filename)
        if text is None:
            result = _git(path, "show", f"HEAD:{filename}")
            text = result.stdout if result.returncode == 0 else None
        if text is None:
            continue
        tried.append(filename)
        name = _name_from_pyproject(text) if filename == "pyproject.toml" else _name_from_cfg(text)
        if name is not None:
            return name
    found = f"{' and '.join(tried)} name no project" if tried else "no pyproject.toml"
    raise RepoError(
        f"cannot read the distribution name from {path} ({found}): add it to the SPEC as "
        f"{path}:DIST"
    )


def _name_from_pyproject(text: str) -> str | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    project = data.get("project")
    if isinstance(project, dict) and isinstance(project.get("name"), str):
        name: str = project["name"]
        return name if is_valid_name(name) else None
    poetry = data.get("tool", {}).get("poetry") if isinstance(data.get("tool"), dict) else None
    if isinstance(poetry, dict) and isinstance(poetry.get("name"), str):
        name = poetry["name"]
        return name if is_valid_name(name) else None
    return None


def _name_from_cfg(text: str) -> str | None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    name = parser.get("metadata", "name", fallback=None)
    return name.strip() if name and is_valid_name(name.strip()) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        check=False,
    )


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].removeprefix("fatal: ") if lines else "git failed"


# -- the registry ------------------------------------------------------------------------------


VersionStatus = Literal["published", "failed", "removed"]


class VersionRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What happened to one version of a repository: each version lives on its own.

    `failed`: the last attempt failed (`message`, `log`), and the periodic check tries again at
    `retry_at` (backoff on `attempts`); the other versions are built meanwhile. `removed`: taken
    off the index by `insidersctl remove`; the watcher never builds it again on its own.
    """

    status: VersionStatus
    at: float = 0.0  # when this status was recorded
    message: str | None = None
    log: str | None = None
    attempts: int = 0  # consecutive failed attempts
    retry_at: float | None = None


class RepoState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the watcher learned; times are wall-clock seconds."""

    last_check: float | None = None
    newest_tag: str | None = None
    last_published: str | None = None  # the newest version it published
    last_published_at: float | None = None
    last_error: str | None = None  # None once a check succeeds again
    last_error_at: float | None = None
    log: str | None = None  # the log of the last build or failure
    failures: int = 0  # consecutive, for backoff
    # Versions the policy chose not to build at the first listing (`newest`: all but the newest);
    # None until that first listing, so a failed first check does not count as one.
    skipped: tuple[str, ...] | None = None
    etag: str | None = None  # GitHub API conditional requests
    # Per version (as the tag names it, PEP 440 text): failed, removed, published by the watcher.
    versions: dict[str, VersionRecord] = msgspec.field(default_factory=dict)
    # The last listing found tags but none that names a version: the first few, to show why.
    ignored_tags: tuple[str, ...] = ()
    tags_seen: int = 0  # how many tags the last listing found


class Repo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    dist: str  # as given; `key` is its normalised form
    source: Source
    added: float
    versions: VersionPolicy = "newest"
    since: str | None = None
    publish_to: tuple[str, ...] = ()
    local: bool = True  # publish to this index
    state: RepoState = RepoState()

    @property
    def key(self) -> NormalizedName:
        return normalize(self.dist)


class _RepoFile(msgspec.Struct, kw_only=True):
    version: int = FORMAT_VERSION
    repos: list[Repo] = msgspec.field(default_factory=list)


_encode = msgspec.json.Encoder(order="deterministic").encode
_decode = msgspec.json.Decoder(_RepoFile).decode


def make_repo(
    parsed: ParsedSpec,
    dist: str,
    *,
    versions: VersionPolicy = "newest",
    since: str | None = None,
    publish_to: tuple[str, ...] = (),
    local: bool = True,
    now: float | None = None,
) -> Repo:
    """Validate the options of `repos add` (pure) and make the record."""
    if versions == "since":
        if not since:
            raise RepoError("--since needs a VERSION")
        if parse_version(since) is None:
            raise RepoError(f"--since {since}: not a version (PEP 440)")
    elif since is not None:
        raise RepoError(f"a --since version goes with versions='since', not {versions!r}")
    for target in publish_to:
        if not _TARGET.match(target):
            raise RepoError(f"--publish-to {target!r}: not a target name of the config")
    if len(set(publish_to)) != len(publish_to):
        raise RepoError("--publish-to names a target twice")
    if not local and not publish_to:
        raise RepoError("a repository published nowhere: give --publish-to, or publish locally")
    return Repo(
        dist=dist,
        source=parsed.source,
        added=time.time() if now is None else now,
        versions=versions,
        since=since,
        publish_to=publish_to,
        local=local,
    )


def resolve_dist(parsed: ParsedSpec, spec: str) -> str:
    """DIST from the SPEC, else from the local repository (blocking); checks a local repository."""
    local = parsed.source.local_path
    if local is not None:
        check_local(local)
    if parsed.dist is not None:
        return parsed.dist
    if local is None:
        raise RepoError(
            f"{spec}: give the distribution name of a remote repository: {spec}:DIST "
            "(it is not fetched before the watcher's first check)"
        )
    return read_dist_name(local)


class Repos:
    """The registry: read at start, every change written through atomically before it is seen."""

    def __init__(self, path: Path, repos: dict[NormalizedName, Repo]) -> None:
        self.path = path
        self._repos = repos
        self._lock = trio.Lock()
        self._listeners: list[Callable[[NormalizedName, Repo | None], None]] = []

    @classmethod
    def open(cls, data_dir: Path) -> Repos:
        """Load the registry (blocking). An unreadable file is moved aside, loudly, not lost."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / REPOS_FILE
        try:
            loaded = _decode(path.read_bytes())
        except FileNotFoundError:
            return cls(path, {})
        except msgspec.DecodeError as error:
            aside = path.with_name(f"{REPOS_FILE}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            log.error(
                "%s: unreadable (%s); moved to %s, starting with no repos", path, error, aside
            )
            return cls(path, {})
        return cls(path, {repo.key: repo for repo in loaded.repos})

    def all(self) -> list[Repo]:
        return sorted(self._repos.values(), key=lambda r: r.key)

    def get(self, key: NormalizedName) -> Repo | None:
        return self._repos.get(key)

    def find(self, name: str) -> Repo:
        """By distribution name, or by source as written (OWNER/REPO, the URL, the path)."""
        if is_valid_name(name) and (repo := self._repos.get(normalize(name))):
            return repo
        wanted = name.strip().removesuffix("/").removesuffix(".git")
        for repo in self._repos.values():
            location = repo.source.location
            if wanted in {location, location.removesuffix(".git")} or (
                repo.source.kind == "github" and wanted.lower() == location.lower()
            ):
                return repo
        known = ", ".join(sorted(self._repos)) or "none"
        raise RepoError(f"no watched repository {name!r} (watched: {known})")

    def subscribe(self, listener: Callable[[NormalizedName, Repo | None], None]) -> None:
        """Call listener(key, repo) after a repository is added, and (key, None) after removal."""
        self._listeners.append(listener)

    async def add(self, repo: Repo) -> Repo:
        async with self._lock:
            if existing := self._repos.get(repo.key):
                raise RepoError(
                    f"{existing.dist} is watched already, from {existing.source.location} "
                    f"(remove it first: insidersctl repos remove {existing.dist})"
                )
            for other in self._repos.values():
                if other.source == repo.source:
                    raise RepoError(f"{repo.source.location} is watched already, for {other.dist}")
            await self._save({**self._repos, repo.key: repo})
        self._notify(repo.key, repo)
        return repo

    async def remove(self, name: str) -> Repo:
        async with self._lock:
            repo = self.find(name)
            await self._save({k: r for k, r in self._repos.items() if k != repo.key})
        self._notify(repo.key, None)
        return repo

    async def update_state(
        self, key: NormalizedName, change: Callable[[RepoState], RepoState]
    ) -> Repo | None:
        """Apply `change` to a repository's state and persist it; None if it was removed."""
        async with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                return None
            updated = msgspec.structs.replace(repo, state=change(repo.state))
            await self._save({**self._repos, key: updated})
            return updated

    async def mark_removed(self, key: NormalizedName, versions: list[str]) -> None:
        """Record that these versions were taken off the index (see VersionRecord)."""
        now = time.time()

        def change(state: RepoState) -> RepoState:
            removed = {v: VersionRecord(status="removed", at=now) for v in versions}
            kept = {
                text: record
                for text, record in state.versions.items()
                if parse_version(text) not in {parse_version(v) for v in versions}
            }
            return msgspec.structs.replace(state, versions={**kept, **removed})

        await self.update_state(key, change)

    async def _save(self, repos: dict[NormalizedName, Repo]) -> None:
        data = _encode(_RepoFile(repos=sorted(repos.values(), key=lambda r: r.key)))
        await trio.to_thread.run_sync(atomic_write, self.path, data, 0o600)
        self._repos = repos

    def _notify(self, key: NormalizedName, repo: Repo | None) -> None:
        for listener in self._listeners:
            listener(key, repo)
