"""HTTPS with a certificate from a CA made in the test: pip, uv and twine trust it; SIGHUP loads
a renewed certificate into the running listener, and a broken renewal leaves the old one."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import trustme

from tests.support import (
    BIN,
    Daemon,
    git_project,
    installed_version,
    isolated_env,
    run_ctl,
    tag_release,
)
from tests.test_watcher import wheelhouse  # noqa: F401  (the fixture)


def issue(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written as the PEM files the config names."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    certificate, key = directory / "certificate.pem", directory / "key.pem"
    for path, data in (
        (certificate, b"".join(blob.bytes() for blob in leaf.cert_chain_pems)),
        (key, leaf.private_key_pem.bytes()),
    ):
        temp = path.with_suffix(".new")
        temp.write_bytes(data)
        temp.replace(path)  # as a renewal tool replaces them
    return certificate, key


def https_daemon(tmp_path: Path) -> tuple[Daemon, trustme.CA, Path, Path]:
    """A daemon serving HTTPS with a certificate of a new CA (written to ca.pem for the clients)
    from files under tmp_path/tls (`issue` renews them): the daemon, the CA, ca.pem, the key."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    certificate, key = issue(ca, tmp_path / "tls")
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\ntls-certificate = "{certificate}"\ntls-key = "{key}"\n')
    daemon = Daemon(tmp_path / "d", ["--config", str(config), "--upstream-mode", "none"]).start()
    return daemon, ca, ca_file, key


def presented(daemon: Daemon, ca_file: Path) -> bytes:
    """The certificate a new connection is shown (DER)."""
    host, port = daemon.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """requests (twine) lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE override --cert: drop them."""
    env = isolated_env(home, **extra)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    return env


def test_https_for_pip_uv_and_twine_and_certificate_reload(
    tmp_path: Path, dists: dict[str, list[Path]]
) -> None:
    daemon, ca, ca_file, key = https_daemon(tmp_path)
    try:
        assert daemon.url.startswith("https://127.0.0.1:")
        twine = [
            str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar",
            "--cert", str(ca_file), "--repository-url", f"{daemon.url}/legacy/",
            "-u", "__token__", "-p", daemon.token, *map(str, dists["demo-1.0"]),
        ]  # fmt: skip
        uploaded = subprocess.run(
            twine, env=client_env(tmp_path), capture_output=True, text=True, timeout=120
        )
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr

        pip = [
            str(BIN / "python"), "-m", "pip", "install", "--isolated", "--no-cache-dir",
            "--cert", str(ca_file), "--index-url", daemon.index, "--target", str(tmp_path / "pip"),
            "demo-pkg",
        ]  # fmt: skip
        installed = subprocess.run(
            pip, env=client_env(tmp_path), capture_output=True, text=True, timeout=120
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"
        uv = [
            str(BIN / "uv"), "pip", "install", "--no-config", "--no-cache",
            "--default-index", daemon.index, "--target", str(tmp_path / "uv"),
            "--python", str(BIN / "python"), "demo-pkg",
        ]  # fmt: skip
        env = client_env(tmp_path, SSL_CERT_FILE=str(ca_file))
        installed = subprocess.run(uv, env=env, capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, installed.stderr
        assert installed_version(tmp_path / "uv", "demo_pkg") == "1.0.0"
        # Without the CA, clients refuse the certificate: it really is this CA's.
        untrusted = subprocess.run(
            [*uv[:-1], "--reinstall", "demo-pkg"],
            env=client_env(tmp_path, SSL_CERT_FILE="/dev/null"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert untrusted.returncode != 0

        # A connection open before the renewal; the listener and its port stay.
        before = presented(daemon, ca_file)
        client = httpx.Client(
            base_url=daemon.url, verify=ssl.create_default_context(cafile=ca_file)
        )
        assert client.get("/simple/").status_code == 200
        issue(ca, tmp_path / "tls")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("TLS certificate reloaded")
        after = presented(daemon, ca_file)
        assert after != before
        assert client.get("/simple/").status_code == 200
        client.close()

        # A broken renewal (a key of another certificate): refused, the running one stays.
        other = trustme.CA().issue_cert("127.0.0.1")
        other.private_key_pem.write_to_path(str(key))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("TLS certificate not reloaded, the running one stays")
        assert presented(daemon, ca_file) == after
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()


def test_insidersctl_reload_says_when_the_certificate_was_refused(tmp_path: Path) -> None:
    """The settings apply, but a certificate that cannot be served is kept out: `reload` (what
    `systemctl reload` runs for the user unit) says so and fails, rather than "reloaded"."""
    daemon, ca, ca_file, key = https_daemon(tmp_path)

    def reload(*args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(daemon, "reload", *args, timeout=60)

    try:
        issue(ca, tmp_path / "tls")  # a renewal
        renewed = reload()
        assert (renewed.returncode, renewed.stderr) == (0, "insidersd reloaded its configuration\n")
        served = presented(daemon, ca_file)

        trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(key))  # no pair
        refused = reload()
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "insidersd reloaded its configuration but refused the TLS certificate, "
            "the running one stays: "
        )
        assert "KEY_VALUES_MISMATCH" in refused.stderr
        as_json = reload("--json")
        assert as_json.returncode == 1
        assert "KEY_VALUES_MISMATCH" in json.loads(as_json.stdout)["certificate_error"]
        assert presented(daemon, ca_file) == served

        issue(ca, tmp_path / "tls")  # mended: loaded again, and said so
        mended = reload("--json")
        assert mended.returncode == 0
        assert json.loads(mended.stdout)["certificate_error"] is None
        assert presented(daemon, ca_file) != served
    finally:
        daemon.stop()


def test_tls_settings_go_together(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"

    def refused(text: str) -> str:
        config.write_text(text)
        result = subprocess.run(
            [str(BIN / "insidersd"), "--config", str(config), "--port", "0"],
            env=isolated_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        return result.stderr

    certificate, key = tmp_path / "c.pem", tmp_path / "k.pem"
    alone = refused(f'[server]\ntls-certificate = "{certificate}"\n')
    assert "tls-certificate and tls-key go together" in alone
    missing = refused(f'[server]\ntls-certificate = "{certificate}"\ntls-key = "{key}"\n')
    assert f"TLS: cannot serve the certificate {certificate}" in missing


def test_builds_resolve_through_a_private_https_index(
    tmp_path: Path,
    wheelhouse: Daemon,  # noqa: F811
) -> None:
    """With TLS and read tokens, the watcher's builds still reach this index for their build
    dependencies: a loopback plain-HTTP listener and a read token of their own."""
    ca = trustme.CA()
    certificate, key = issue(ca, tmp_path / "tls")
    home = tmp_path / "d"
    (home / "config" / "insiders").mkdir(parents=True)
    (home / "config" / "insiders" / "config.toml").write_text(
        f'[server]\nread-access = "token"\ntls-certificate = "{certificate}"\ntls-key = "{key}"\n'
    )
    daemon = Daemon(home, ["--upstream", wheelhouse.index]).start()
    try:
        assert daemon.url.startswith("https://")
        repo = git_project(tmp_path / "src", "private-build")
        tag_release(repo, "1.0.0")
        ctl = [str(BIN / "insidersctl")]
        env = isolated_env(home)
        for args in (["repos", "add", f"{repo}:private-build"], ["update", "--wait"]):
            done = subprocess.run(
                [*ctl, *args], env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stdout + done.stderr
        listed = subprocess.run(
            [*ctl, "projects", "show", "private-build"], env=env, capture_output=True, text=True
        )
        assert "private_build-1.0.0.tar.gz" in listed.stdout, listed.stderr
        assert ".whl" in listed.stdout
        assert "insidersd-builds" not in listed.stdout
        assert (
            "insiders-"
            not in (daemon.data_dir / "logs" / "private-build" / "1.0.0.log").read_text()
        )
    finally:
        daemon.stop()


def test_certificate_from_systemd_credentials(tmp_path: Path) -> None:
    """Under systemd, $CREDENTIALS_DIRECTORY/tls-certificate and tls-key serve HTTPS."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    certificate, key = issue(ca, tmp_path / "pem")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tls-certificate").write_bytes(certificate.read_bytes())
    (credentials / "tls-key").write_bytes(key.read_bytes())
    daemon = Daemon(
        tmp_path / "d", ["--upstream-mode", "none"], env={"CREDENTIALS_DIRECTORY": str(credentials)}
    ).start()
    try:
        assert daemon.url.startswith("https://127.0.0.1:")
        with httpx.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:
            assert client.get(f"{daemon.url}/simple/").status_code == 200
    finally:
        daemon.stop()
