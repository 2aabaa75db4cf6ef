"""The SPEC grammar of `insidersctl repos add`: pure functions from text to a repository's source.

    OWNER/REPO[:DIST]          a GitHub repository
    URL[:DIST]                 any git URL: https://, http://, ssh://, git://, file://
    [USER@]HOST:PATH[:DIST]    scp-like ssh (git's rule: no slash before the first colon)
    PATH[:DIST]                a local repository: /abs, ./rel, ../rel or ~/...

DIST is the distribution the repository builds; when it is left out, insiders.repos.source reads
it from a local repository. Nothing that starts with '-' is a location: git and ssh would take it
as an option. These forms are an allow-list: git's TRANSPORT::ADDRESS form (`ext::CMD` runs CMD,
`fd::N` talks to a descriptor, `x::` runs a program git-remote-x) is refused here, and every git
process the daemon runs has GIT_ALLOW_PROTOCOL set to the same protocols, for what the registry
already holds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import msgspec

from insiders.errors import SpecError
from insiders.names import is_valid_name

SourceKind = Literal["github", "git", "path"]

# The protocols git may use for a watched repository (scp-like is ssh, a local path is file):
# GIT_ALLOW_PROTOCOL's value in every git process's environment.
GIT_PROTOCOLS = ("https", "http", "ssh", "git", "file")
GIT_ALLOW_PROTOCOL = ":".join(GIT_PROTOCOLS)
_SCHEMES = (*GIT_PROTOCOLS, "git+ssh", "ssh+git")
# git's own test (transport.c): URL-scheme characters, then "::", name a remote helper.
_HELPER = re.compile(r"^(?P<transport>[A-Za-z][A-Za-z0-9+.-]*)::")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
# GitHub's own rules: owners are letters, digits and single inner hyphens, at most 39 long.
_GITHUB_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_RELATIVE = re.compile(r"^\.\.?(?:/|:|$)")
_DASH_HOST = "a host does not start with '-' (ssh would take it as an option)"


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
    if match := _HELPER.match(spec):
        transport = match.group("transport")
        raise SpecError(
            f"{text!r}: git's {transport}::ADDRESS form hands the address to a remote helper "
            f"(git-remote-{transport}), which is not watched here: use an https, http, ssh, git "
            "or file URL, [USER@]HOST:PATH, OWNER/REPO or a local path"
        )
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
