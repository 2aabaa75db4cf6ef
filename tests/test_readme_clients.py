"""The README's client steps, run as written, against an index with TLS from a private CA.

Every command here is read from README.md ("Serve a team": its config, the CA bundle, a block
per client, the one-command forms and the upload environment; "Upload": twine, uv and poetry;
"Point your tools": the variables and `no-insiders`), so the README cannot drift from what was
run. The only changes made to the text are the names it says stand for something:
`index.example:31411` (the index, here `localhost` on a free port), `CA.pem` (the index's CA),
`NAME` (what to install), `http://127.0.0.1:31411/` (`make run`'s index, here the TLS one) and
Debian's system CA file.

Two CAs take part. The index's certificate comes from `own` CA, which no client trusts until the
README's steps say so. The upstream index (another insidersd, hosting `other-pkg`) stands for the
public index: its certificate comes from a `system` CA, which stands for the CAs a machine
trusts already: OpenSSL's default file (SSL_CERT_FILE: truststore in pip and pdm) and the list
Python clients ship with (a `certifi` of the test's own). uv's built-in list cannot be stood in
for; the README gives uv the bundle anyway. The index redirects to the upstream for `other-pkg`,
so every client must verify both, and a client told to trust `CA.pem` alone (what the README
said before) refuses the upstream: test_the_ca_alone_fails_the_redirect shows which.

Each client runs with a home of its own (HOME and the XDG directories) and none of this
machine's CA variables, so its configuration is what the README's lines wrote, and nothing else.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.fronts import free_port
from tests.support import BIN, Daemon, build, installed_version, isolated_env, write_project
from tests.test_ctl import ok

README = Path(__file__).resolve().parent.parent / "README.md"
INSTALLED = "demo-pkg other-pkg"  # hosted here, and redirected to the upstream
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
# CA settings a machine's environment may carry (CURL_CA_BUNDLE, SSL_CERT_DIR, ...): a person's
# shell has none of them unless the README's lines set them.
CA_VARIABLE = re.compile(r"CA_BUNDLE|SSL_CERT|CA_CERTS|_CERT$")


def section(title: str) -> str:
    """A `## title` section of the README, up to the next one."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def client_part() -> str:
    """The part of "Serve a team" on clients: from its heading to the paragraph on redirects."""
    text = section("Serve a team")
    start = text.index("**Each client, with a read token**")
    return text[start : text.index("Redirects to the upstream index never carry", start)]


def client_blocks() -> dict[str, str]:
    """The shell block for each client, by the name its first comment gives."""
    blocks = {}
    for block in fenced(client_part(), "sh"):
        first = block.splitlines()[0]
        if first.startswith("# "):
            blocks[first.split()[1].rstrip(",")] = block
    return blocks


def bundle_block() -> str:
    (block,) = (b for b in fenced(client_part(), "sh") if not b.startswith("# "))
    return block


def upload_environment() -> str:
    """The `export ...` the README gives uploads over TLS (a code span that may wrap)."""
    spans = re.findall(r"`(export [^`]*)`", client_part())
    assert len(spans) == 1, spans
    return " ".join(spans[0].split())


@dataclass
class Setup:
    """The two indexes and what a client is given: a read token and the index's CA file."""

    index: Daemon
    upstream: Daemon
    port: int
    token: str
    own_ca: Path
    system_cas: Path
    trust: ssl.SSLContext
    certifi: Path  # a directory holding a `certifi` whose list is the system CAs

    def substituted(self, text: str, installed: str = INSTALLED) -> str:
        """The README's text with its stand-in names replaced by this run's."""
        text = text.replace("index.example:31411", f"localhost:{self.port}")
        text = text.replace("http://127.0.0.1:31411/", f"https://localhost:{self.port}/")
        text = text.replace("index.example", "localhost")
        text = text.replace(SYSTEM_CAS, str(self.system_cas))
        text = text.replace("CA.pem", str(self.own_ca))
        return re.sub(r"\bNAME\b", installed, text)


def issue(ca: trustme.CA, directory: Path, *names: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    certificate, key = directory / "certificate.pem", directory / "key.pem"
    certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return certificate, key


def shipped(where: Path, cas: Path) -> Path:
    """A `certifi` package whose list is `cas`: the list a client ships with, which holds the
    public index's CA in real life, holds the stand-in's here."""
    package = where / "shipped" / "certifi"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"def where():\n    return {str(cas)!r}\n\n\n"
        "def contents():\n    with open(where()) as file:\n        return file.read()\n"
    )
    return package.parent


def upload(daemon: Daemon, url: str, trust: ssl.SSLContext, paths: list[Path]) -> None:
    """Upload through `url` (the daemon's own `url` may name 0.0.0.0), trusting `trust`."""
    daemon.client = lambda: httpx.Client(base_url=url, verify=trust, timeout=30)  # type: ignore[method-assign]
    for path in paths:
        response = daemon.upload(path)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, dists: dict[str, list[Path]]
) -> Iterator[Setup]:
    where = tmp_path_factory.mktemp("readme-clients")
    system, own = trustme.CA(), trustme.CA()
    system_cas, own_ca = where / "system-cas.pem", where / "CA.pem"
    system.cert_pem.write_to_path(str(system_cas))
    own.cert_pem.write_to_path(str(own_ca))

    # The upstream: a public index, as far as the clients can tell.
    certificate, key = issue(system, where / "upstream-tls", "127.0.0.1")
    (where / "upstream.toml").write_text(
        f'[server]\ntls-certificate = "{certificate}"\ntls-key = "{key}"\n'
    )
    upstream = Daemon(
        where / "upstream", ["--config", str(where / "upstream.toml"), "--upstream-mode", "none"]
    ).start()
    trust = ssl.create_default_context(cafile=system_cas)
    trust.load_verify_locations(cafile=own_ca)
    index: Daemon | None = None
    try:
        upload(upstream, upstream.url, trust, dists["other-0.1"])

        # The index, configured with the README's own example.
        port = free_port()
        certificate, key = issue(own, where / "tls", "localhost", "127.0.0.1")
        toml = fenced(section("Serve a team"), "toml")[0]
        config = toml.replace("index.example:31411", f"localhost:{port}")
        config = config.replace("/etc/insiders/tls/fullchain.pem", str(certificate))
        config = config.replace("/etc/insiders/tls/privkey.pem", str(key))
        assert 'host = "0.0.0.0"' in config, config
        (where / "config.toml").write_text(config)
        index = Daemon(
            where / "index",
            ["--config", str(where / "config.toml"), "--upstream", upstream.index],
            # The daemon's machine trusts the system's CAs, as the clients' machines do.
            env={"SSL_CERT_FILE": str(system_cas)},
        ).start(port=port)
        upload(index, f"https://localhost:{port}", trust, dists["demo-1.0"])
        token = ok(index, "tokens", "create", "reader", "--scope", "read").strip()
        yield Setup(
            index, upstream, port, token, own_ca, system_cas, trust, shipped(where, system_cas)
        )
    finally:
        for daemon in (index, upstream):
            if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


def client_env(setup: Setup, home: Path, tools: Path | None = None) -> dict[str, str]:
    """A person's shell: their own HOME and XDG directories, the read token in $TOKEN, and no
    configuration of theirs beyond what the README's lines write (pip's `config set` needs its
    user file: PIP_CONFIG_FILE is not pointed away)."""
    env = {
        name: value
        for name, value in isolated_env(home, TOKEN=setup.token).items()
        if name != "PIP_CONFIG_FILE" and not CA_VARIABLE.search(name)
    }
    env.update(
        PATH=os.pathsep.join([*([str(tools)] if tools else []), str(BIN), "/usr/bin", "/bin"]),
        # The CAs a client trusts before it is told anything are the "system" CAs of this run:
        # OpenSSL's default (truststore in pip and pdm), and certifi's list (requests in poetry).
        SSL_CERT_FILE=str(setup.system_cas),
        PYTHONPATH=str(setup.certifi),
        PDM_CHECK_UPDATE="false",
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    home.mkdir(parents=True, exist_ok=True)
    return env


def shell(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def versions(python: Path, env: dict[str, str]) -> str:
    """What `python` imports of the two projects (their VERSION, see write_project)."""
    probe = "import demo_pkg, other_pkg; print(demo_pkg.VERSION, other_pkg.VERSION)"
    done = subprocess.run(
        [str(python), "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def a_project(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11,<4"\n'
        "dependencies = []\n\n[tool.poetry]\npackage-mode = false\n\n"
        "[tool.pdm]\ndistribution = false\n"
    )
    return where


def pip_front(tools: Path, pip: Path, venv: Path) -> None:
    """`pip` on PATH: the given pip, installing into `venv` (pip's own --python)."""
    tools.mkdir(parents=True, exist_ok=True)
    front = tools / "pip"
    front.write_text(f'#!/bin/sh\nexec {pip} -m pip --python {venv}/bin/python "$@"\n')
    front.chmod(0o755)


def prepared(
    setup: Setup, tmp_path: Path, client: str, old_pip: Path
) -> tuple[dict[str, str], Path, Path]:
    """A home for `client` (pip, pip-23.0.1, uv, poetry, pdm): its environment, the directory
    its lines run in, and the Python they install into. pip and uv install into a fresh venv
    (pip's `--python`, uv's VIRTUAL_ENV); poetry and pdm in a project of their own."""
    tool = client.split("-")[0]
    home, tools, venv = tmp_path / "home", tmp_path / "tools", tmp_path / "venv"
    env = client_env(setup, home, tools)
    if tool == "pip":
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip_front(tools, old_pip if client == "pip-23.0.1" else Path(sys.executable), venv)
        return env, home, venv / "bin" / "python"
    if tool == "uv":
        subprocess.run(
            [str(BIN / "uv"), "venv", "--quiet", "--python", sys.executable, str(venv)],
            env=env,
            check=True,
        )
        env["VIRTUAL_ENV"] = str(venv)
        return env, home, venv / "bin" / "python"
    cwd = a_project(home / "app")
    return env, cwd, cwd / ".venv" / "bin" / "python"


@pytest.mark.parametrize("client", ["pip", "pip-23.0.1", "uv", "poetry", "pdm"])
def test_each_client_with_a_read_token(
    setup: Setup, tmp_path: Path, client: str, old_pip: Path
) -> None:
    """The bundle line, then the client's block: the hosted project and the redirected one
    install, both certificates verified, with the token from the person's configuration."""
    env, cwd, python = prepared(setup, tmp_path, client, old_pip)
    script = setup.substituted(bundle_block() + client_blocks()[client.split("-")[0]])
    done = shell(script, env, cwd)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert versions(python, env) == "1.0.0 0.1"
    assert setup.token not in done.stdout + done.stderr


def one_command(tool: str) -> str:
    """The README's one-command form for pip or uv (code spans that may wrap)."""
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]*)`", client_part())]
    (line,) = (span for span in spans if re.match(rf"(\S+=\S+ )?{tool} (pip )?install ", span))
    return line


@pytest.mark.parametrize("client", ["pip", "pip-23.0.1", "uv"])
def test_one_command_with_a_read_token(
    setup: Setup, tmp_path: Path, client: str, old_pip: Path
) -> None:
    """The token in the URL and the bundle on the command line, for one command."""
    env, cwd, python = prepared(setup, tmp_path, client, old_pip)
    script = setup.substituted(f"{bundle_block()}{one_command(client.split('-')[0])}\n")
    done = shell(script, env, cwd)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert versions(python, env) == "1.0.0 0.1"


def test_each_client_has_a_block() -> None:
    assert set(client_blocks()) == {"pip", "uv", "poetry", "pdm"}


def test_the_team_example_links_with_its_public_url(setup: Setup) -> None:
    """On 0.0.0.0, the example's `public-url` is what the pages hand out, not this machine's
    host name (which the certificate does not name)."""
    with httpx.Client(verify=setup.trust, auth=("__token__", setup.token), timeout=30) as client:
        home = client.get(f"https://localhost:{setup.port}/")
    assert home.status_code == 200
    assert f"https://localhost:{setup.port}/simple/" in home.text
    assert f"https://{socket.gethostname()}:" not in home.text


def test_a_read_without_a_token_says_why_in_its_status_line(setup: Setup) -> None:
    """poetry prints a refusal's status line alone ("401 Client Error: ... for url"): the 401
    carries its reason there, as the other refusals do."""
    context = ssl.create_default_context(cafile=setup.own_ca)
    request = f"GET /simple/ HTTP/1.1\r\nHost: localhost:{setup.port}\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", setup.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request.encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            assert chunk, answer
            answer += chunk
    line = answer.split(b"\r\n", 1)[0].decode()
    assert line.startswith("HTTP/1.1 401 This index needs a read token: HTTP Basic with"), line


def upload_blocks() -> list[str]:
    return fenced(section("Upload"), "sh")


def hosted(setup: Setup, name: str) -> list[str]:
    """The files the index lists for `name`."""
    with httpx.Client(verify=setup.trust, auth=("__token__", setup.token), timeout=30) as client:
        page = client.get(
            f"https://localhost:{setup.port}/simple/{name}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
    assert page.status_code == 200, page.text
    return sorted(file["filename"] for file in page.json()["files"])


def with_upload_token(setup: Setup, home: Path) -> None:
    """The token where `make run` leaves it, which the README's upload lines read."""
    path = home / ".local" / "share" / "insiders" / "upload-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(setup.index.token + "\n")


def test_upload_with_twine_and_uv(setup: Setup, tmp_path: Path) -> None:
    """The Upload section's twine and uv lines over TLS, with the README's environment line."""
    home = tmp_path / "home"
    env = client_env(setup, home)
    with_upload_token(setup, home)
    files = build(write_project(tmp_path / "src", "readme-upload", "1.0"), home / "dist")
    twine_and_uv = upload_blocks()[0]
    assert "twine upload" in twine_and_uv
    assert "uv publish" in twine_and_uv
    script = setup.substituted(f"{bundle_block()}{upload_environment()}\n{twine_and_uv}")
    done = shell(script, env, home)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert hosted(setup, "readme-upload") == sorted(path.name for path in files)


def test_poetry_publishes_then_installs(setup: Setup, tmp_path: Path) -> None:
    """The Upload section's poetry lines, then the client block's, in one home: the repository
    and the source, named apart, each work (poetry downloads a host's files with the settings
    of one repository it knows there: the block gives the upload repository the CA too)."""
    home = tmp_path / "home"
    env = client_env(setup, home)
    with_upload_token(setup, home)
    project = write_project(tmp_path / "src", "poetry-published", "1.0")
    build(project, project / "dist")
    (block,) = (b for b in upload_blocks() if "poetry publish" in b)
    script = setup.substituted(f"{bundle_block()}{upload_environment()}\n{block}")
    done = shell(script, env, project)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert len(hosted(setup, "poetry-published")) == 2

    app = a_project(home / "app")
    script = setup.substituted(client_blocks()["poetry"], f"{INSTALLED} poetry-published")
    done = shell(script, env, app)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert versions(app / ".venv" / "bin" / "python", env) == "1.0.0 0.1"


@pytest.mark.parametrize(
    ("client", "verified"),
    [("pip", True), ("pip-23.0.1", False), ("uv", False), ("poetry", False), ("pdm", False)],
)
def test_the_ca_alone_fails_the_redirect(
    setup: Setup, tmp_path: Path, client: str, verified: bool, old_pip: Path
) -> None:
    """What the README said before: a client told to trust `CA.pem` alone reaches the index
    and then refuses the upstream it is redirected to, so the README gives them the bundle.
    pip 24.2 and later are the exception (their truststore adds `--cert` to the system's CAs)."""
    tool = client.split("-")[0]
    env, cwd, _ = prepared(setup, tmp_path, client, old_pip)
    env["PIP_RETRIES"] = "0"  # pip would try a refused certificate five times
    block = client_blocks()[tool].replace("~/insiders-ca.pem", "CA.pem")
    hosted_only = setup.substituted(block, "demo-pkg")
    done = shell(hosted_only, env, cwd)
    assert done.returncode == 0, f"{hosted_only}\n{done.stdout}\n{done.stderr}"
    redirected = setup.substituted(block, "other-pkg")
    done = shell(redirected, env, cwd)
    if verified:
        assert done.returncode == 0, f"{redirected}\n{done.stdout}\n{done.stderr}"
        return
    assert done.returncode != 0
    printed = done.stdout + done.stderr
    # poetry names the URL it asked for, not the one it was redirected to
    assert re.search(r"certificate|SSL|All attempts to connect", printed), printed


def test_point_your_tools_at_the_local_index(tmp_path: Path, dists: dict[str, list[Path]]) -> None:
    """The section "Point your tools at the index", on `make run`'s plain loopback: its
    variables reach pip and uv (UV_DEFAULT_INDEX, what uv documents), and `no-insiders` takes
    them back, the permanent pip setting too."""
    daemon = Daemon(tmp_path / "daemon", ["--upstream-mode", "none"]).start()
    try:
        for path in dists["demo-1.0"]:
            assert daemon.upload(path).status_code == 200
        text = section("Point your tools at the index").replace("127.0.0.1:31411", daemon.url[7:])
        (variables,) = fenced(text, "sh")
        home = tmp_path / "home"
        home.mkdir()
        env = {**isolated_env(home), "PATH": os.pathsep.join([str(BIN), "/usr/bin", "/bin"])}
        python = sys.executable
        script = (
            f"shopt -s expand_aliases\n{variables}\n"
            f"pip install --quiet --target {tmp_path / 'pip'} demo-pkg\n"
            f"uv pip install --quiet --target {tmp_path / 'uv'} --python {python} demo-pkg\n"
            "no-insiders env\n"
        )
        done = shell(script, env, home)
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        assert installed_version(tmp_path / "pip", "demo_pkg") == "1.0.0"
        assert installed_version(tmp_path / "uv", "demo_pkg") == "1.0.0"
        assert not re.search(r"^(PIP_INDEX_URL|UV_DEFAULT_INDEX|PDM_PYPI_URL)=", done.stdout, re.M)

        (setting,) = re.findall(r"^\| pip \| `(pip config set [^`]*)` \|$", text, re.M)
        env.pop("PIP_CONFIG_FILE")
        script = (
            f"shopt -s expand_aliases\n{variables}\n{setting}\n"
            "pip config list\necho ---\nno-insiders pip config list\n"
        )
        done = shell(script, env, home)
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        kept, set_aside = done.stdout.split("---\n")
        assert f"global.index-url='{daemon.index}'" in kept
        assert "index-url" not in set_aside
    finally:
        daemon.stop()


@pytest.mark.parametrize("client", ["hatch", "pdm", "flit"])
def test_the_upload_environment_serves_the_other_publishers(
    setup: Setup, tmp_path: Path, client: str
) -> None:
    """The README's `export` line for uploads over TLS is all hatch, pdm and flit need too (the
    Upload section says they publish "the same way, with the same user and token"); without
    it, each refuses the index's certificate."""
    home = tmp_path / "home"
    env = client_env(setup, home)
    legacy = f"https://localhost:{setup.port}/legacy/"
    token = setup.index.token
    name = f"{client}-published"
    project = write_project(tmp_path / "src", name, "1.0")
    files = build(project, project / "dist")
    if client == "hatch":
        config = home / "hatch.toml"
        config.write_text("")
        env.update(HATCH_CONFIG=str(config), HATCH_DATA_DIR=str(home / "hatch-data"))
        command = f"hatch publish -n -r {legacy} -u __token__ -a {token} dist/*"
    elif client == "pdm":
        command = f"pdm publish --no-build -r {legacy} -u __token__ -P {token}"
    else:
        module = project / "src" / name.replace("-", "_")
        (module / "__init__.py").write_text('"""A test package."""\n__version__ = "1.0"\n')
        (project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\ndescription = "A test package"\n'
        )
        env.update(FLIT_INDEX_URL=legacy, FLIT_USERNAME="__token__", FLIT_PASSWORD=token)
        command = "flit publish --format wheel"
        files = [f for f in files if f.suffix == ".whl"]
    untrusted = shell(setup.substituted(f"{bundle_block()}{command}\n"), env, project)
    assert untrusted.returncode != 0
    script = setup.substituted(f"{bundle_block()}{upload_environment()}\n{command}\n")
    done = shell(script, env, project)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    assert len(hosted(setup, name)) == len(files)
