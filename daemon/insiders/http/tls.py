"""HTTPS: the server's certificate, in one SSLContext this module owns and reloads in place.

hypercorn builds its SSLContext once (`Config.create_ssl_context`) and wraps every new connection
with it. A Config that hands out a context we keep lets SIGHUP call `load_cert_chain` on that same
context: connections accepted afterwards present the renewed certificate, the listener and the
connections already open are not touched. A new pair is first loaded into a throwaway context, so
a broken renewal (a key that does not match, a half-written file) is refused and the running
certificate stays.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import NamedTuple

from hypercorn.config import Config as HypercornConfig

from insiders.config import ServerSettings
from insiders.errors import ConfigError

log = logging.getLogger(__name__)

CERTIFICATE_CREDENTIAL = "tls-certificate"
KEY_CREDENTIAL = "tls-key"


class TLSFiles(NamedTuple):
    certificate: Path
    key: Path


def tls_files(server: ServerSettings, credentials: Path | None) -> TLSFiles | None:
    """The PEM pair to serve with: systemd's credentials when both are there, else the settings."""
    if credentials is not None:
        certificate, key = credentials / CERTIFICATE_CREDENTIAL, credentials / KEY_CREDENTIAL
        if certificate.exists() and key.exists():
            return TLSFiles(certificate, key)
    if (server.tls_certificate is None) != (server.tls_key is None):
        raise ConfigError(
            "[server] tls-certificate and tls-key go together: set both (PEM files) or neither"
        )
    if server.tls_certificate is None or server.tls_key is None:
        return None
    return TLSFiles(Path(server.tls_certificate).expanduser(), Path(server.tls_key).expanduser())


class ReloadableTLSConfig(HypercornConfig):
    """hypercorn's Config, with one SSLContext made on first use and kept for reloads."""

    _context: ssl.SSLContext | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self._context is None:
            self._context = super().create_ssl_context()
        return self._context

    def reload_certificate(self) -> None:
        """Load the certificate files again into the live context (blocking: a thread).

        Raises OSError (ssl.SSLError included) when the new pair cannot be used; the running
        certificate then stays.
        """
        if self._context is None or self.certfile is None or self.keyfile is None:
            return
        trial = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trial.load_cert_chain(self.certfile, self.keyfile)
        self._context.load_cert_chain(self.certfile, self.keyfile)
        log.info("TLS certificate reloaded from %s", self.certfile)


def enable(config: ReloadableTLSConfig, files: TLSFiles) -> None:
    """Serve HTTPS with these files; a pair that cannot be loaded stops the start here."""
    trial = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        trial.load_cert_chain(files.certificate, files.key)
    except OSError as error:
        raise ConfigError(
            f"TLS: cannot serve the certificate {files.certificate} with the key {files.key}: "
            f"{error.strerror or error}"
        ) from None
    config.certfile = str(files.certificate)
    config.keyfile = str(files.key)
