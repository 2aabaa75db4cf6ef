"""Settings: msgspec Structs decoded from an optional TOML file, then overridden by flags.

The file is strict (unknown keys are errors), so a typo is reported instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args, get_origin, get_type_hints

import msgspec

from insiders.errors import ConfigError

# Where things are is decided in one place for insidersd and insidersctl: insidersctl.paths (the
# client may not import the daemon). Named here too, where the daemon's modules look for them.
from insidersctl.paths import Directories as Directories
from insidersctl.paths import PathSettings as PathSettings
from insidersctl.paths import default_config_path as default_config_path
from insidersctl.paths import resolve_directories as resolve_directories

UpstreamMode = Literal["redirect", "proxy", "cache", "none"]
ProjectUpstream = Literal["shadow", "merge"]
LogLevel = Literal["debug", "info", "warning", "error"]
ReadAccess = Literal["anyone", "token"]
SandboxSetting = Literal["auto", "bubblewrap", "none"]

DEFAULT_PORT = 31411
Positive = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Size = Annotated[int, msgspec.Meta(gt=0)]
# A host name or an IP address, as a Host header names it (without the port).
_HOST_NAME = r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$"
HostName = Annotated[str, msgspec.Meta(pattern=_HOST_NAME)]
# A Content-Security-Policy source expression ("https:", "https://img.example"): no separators.
CSPSource = Annotated[str, msgspec.Meta(pattern=r"^[^\s;,']+$")]


class Reconfigurable(Protocol):
    """The one way a reload reaches a part of the daemon: each takes the new settings, applies
    what it can while running, and names the keys that wait for a restart (`section.key`)."""

    def reconfigure(self, new: Settings) -> Sequence[str]: ...


def changed_keys(section: str, old: msgspec.Struct, new: msgspec.Struct) -> list[str]:
    """`section.key` for each field of a settings section that differs, as the config spells it."""
    return [
        f"{section}.{name.replace('_', '-')}"
        for name in old.__struct_fields__
        if getattr(old, name) != getattr(new, name)
    ]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = DEFAULT_PORT
    # How long in-flight requests may run on after a stop signal.
    graceful_timeout: Positive = 10.0
    max_upload_size: Size = 1 << 30
    # A request body gets this many seconds, plus one per 500 bytes that arrived (a client that
    # trickles its body is answered 408 and closed).
    body_timeout: Positive = 20.0
    # HTTP connections served at once; 0: derived from the file-descriptor limit.
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    # The URL clients reach the index at, when it is not the listening address (behind a proxy):
    # the JSON API's links and the web pages' instructions use it, never the request's Host header.
    public_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")] | None = (
        None
    )
    # Host names clients use besides loopback, the listening address and public-url's host: any
    # other Host header is refused (421), so a web page cannot reach the index by DNS rebinding.
    allowed_hosts: list[HostName] = msgspec.field(default_factory=list)
    # Where the web pages may show images from besides the index (CSP img-src sources): a
    # description's badge from another host would tell that host who reads the page.
    image_sources: list[CSPSource] = msgspec.field(default_factory=list)
    # "token": every read needs HTTP Basic with a token granting read (uploads always need one).
    read_access: ReadAccess = "anyone"
    # Serving beyond loopback with read-access "anyone" must be said out loud: public = true.
    public: bool = False
    # PEM files: HTTPS instead of HTTP (under systemd, the credentials tls-certificate and
    # tls-key are used when these are not set). SIGHUP reloads a renewed certificate.
    tls_certificate: str | None = None
    tls_key: str | None = None


class UpstreamSettings(_Section):
    # None: the index the machine's pip is configured with, else pip's own default.
    url: str | None = None
    mode: UpstreamMode = "redirect"
    # Proxy mode: how long a fetched upstream page is served before it is fetched again.
    cache_ttl: Positive = 600.0
    # How long "the upstream has no such project" is believed: short, so that a project just
    # published there is seen soon, and a flood of one unknown name is one fetch a minute.
    negative_ttl: Positive = 60.0
    # Proxy and cache modes: bytes of upstream pages kept in the cache directory (served while
    # the upstream is down); the least recently fetched go first. Redirect mode keeps no page.
    cache_size: Size = 256 << 20
    # Cache mode: bytes of upstream files (distributions, .metadata) kept in the cache directory,
    # each checked against the sha256 its page announced; the least recently used go first.
    file_cache_size: Size = 10 << 30
    # Cache mode: where those files are kept. None: in the cache directory, private to the daemon.
    # A directory named here is for the nginx front to read (X-Accel-Redirect): its files are
    # written 0644 and its directories 0755, as a mirror directory's.
    file_cache_directory: str | None = None
    timeout: Positive = 15.0


class ProjectSettings(_Section):
    # shadow: hosted files hide the upstream project entirely;
    # merge (proxy mode only): the upstream's files are listed after the hosted ones.
    upstream: ProjectUpstream = "shadow"


class WatcherSettings(_Section):
    # Seconds between periodic checks of every repository (with up to 10% jitter).
    interval: Positive = 600.0
    enabled: bool = True
    max_checks: Annotated[int, msgspec.Meta(ge=1)] = 4  # repositories listed/fetched at once
    max_builds: Annotated[int, msgspec.Meta(ge=1)] = 1  # builds at once (they take the CPU)
    build_timeout: Positive = 900.0
    git_timeout: Positive = 300.0
    # A file holding a GitHub token, for HTTPS access to private repositories. It is only ever
    # sent to github-url. Under systemd, the credential `github-token` is used when present.
    github_token_file: str | None = None
    # Where OWNER/REPO points (a GitHub Enterprise server, say).
    github_url: str = "https://github.com"
    # The shared secret of the push triggers (POST /hooks/github|gitlab|gitea), read from this
    # file (or the systemd credential `webhook-secret`); without one they are off.
    webhook_secret_file: str | None = None
    # What a watched repository's build runs in (insiders.watcher.sandbox): "auto" and
    # "bubblewrap" need bubblewrap and refuse to build without it; "none" runs the repository's
    # code with the daemon's authority (only its writes confined), for a machine that cannot
    # sandbox and repositories the operator trusts.
    sandbox: SandboxSetting = "auto"


class TargetSettings(_Section):
    """Another index the watcher uploads builds to (legacy upload API)."""

    url: str
    username: str = "__token__"
    # The password or token, read from a file (or the systemd credential `target-NAME`).
    password_file: str | None = None


class MirrorSettings(_Section):
    """A static copy of the hosted index that the daemon keeps current: a directory or a bucket.

    Credentials never go here: they are read from the files named, or from the systemd credentials
    `mirror-NAME-access-key-id` and `mirror-NAME-secret-access-key`, else boto3's own chain.
    """

    directory: str | None = None
    # An S3-compatible bucket; `endpoint` None means the provider boto3 knows by default.
    bucket: str | None = None
    endpoint: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id_file: str | None = None
    secret_access_key_file: str | None = None
    # Where the copy is published, for the absolute URLs of the JSON API documents. None: the
    # server's public-url (the front answers at the daemon's public URL), else "/" (links relative
    # to the host that serves the copy).
    url: str | None = None
    # Requests kept in flight at once (files of a project, pages of a release, projects of a
    # comparison); 1 writes one request at a time. The order that keeps every reader's links whole
    # holds at any value: a project's files, then its pages, its manifest, then the root.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16

    def __post_init__(self) -> None:
        if (self.directory is None) == (self.bucket is None):
            raise ValueError("a mirror has either `directory` or `bucket` (one of them)")
        if self.url is not None and not self.url.endswith("/"):
            raise ValueError("`url` ends with /")


class Settings(_Section):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    upstream: UpstreamSettings = msgspec.field(default_factory=UpstreamSettings)
    paths: PathSettings = msgspec.field(default_factory=PathSettings)
    watcher: WatcherSettings = msgspec.field(default_factory=WatcherSettings)
    targets: dict[str, TargetSettings] = msgspec.field(default_factory=dict)
    projects: dict[str, ProjectSettings] = msgspec.field(default_factory=dict)
    mirrors: dict[str, MirrorSettings] = msgspec.field(default_factory=dict)
    log_level: LogLevel = "info"


def load_settings(path: Path, *, required: bool) -> Settings:
    """Decode a TOML file; a missing file gives the defaults unless it was asked for by name."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Settings()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    try:
        return msgspec.toml.decode(data, type=Settings)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{path}: {_readable(str(error))}") from None
    except msgspec.DecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _readable(message: str) -> str:
    # msgspec says "... - at `$.server.port`"; a person thinks of the TOML key `server.port`.
    text, sep, where = message.rpartition(" - at ")
    if not sep:
        return message
    # msgspec writes a table's free-form keys as `[...]`: `projects[...].upstream`.
    key = where.strip("`").removeprefix("$").lstrip(".").replace("[...]", ".<name>")
    if not key:
        return text
    choices = _literal_choices(key)
    if choices and text.startswith("Invalid enum value"):
        text += f" (expected one of: {', '.join(choices)})"
    return f"key `{key}`: {text}"


def _literal_choices(key: str) -> tuple[str, ...]:
    """The allowed values of a Literal setting at a dotted TOML key, to name them in an error."""
    kind: Any = Settings
    for part in key.split("."):
        if get_origin(kind) is dict:
            kind = get_args(kind)[1]  # [projects.NAME]: the key is free, the value typed
            continue
        hints = get_type_hints(kind, include_extras=False)
        kind = hints.get(part.replace("-", "_"))
        if kind is None:
            return ()
    return tuple(str(a) for a in get_args(kind)) if get_origin(kind) is Literal else ()
