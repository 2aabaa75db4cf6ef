"""Push triggers through the real daemon: payloads in the shapes GitHub, GitLab and Gitea document,
signed and mis-signed; a signed GitHub tag push builds and publishes at once."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import Daemon, git_project, tag_release
from tests.test_watcher import ctl, files_of, start, wheelhouse

__all__ = ["wheelhouse"]

SECRET = "s3cret-webhook-KEY-0123456789"


def github_push(full_name: str, ref: str = "refs/tags/v1.0") -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": "a" * 40,
        "created": True,
        "deleted": False,
        "base_ref": None,
        "repository": {
            "id": 1296269,
            "name": name,
            "full_name": full_name,
            "private": True,
            "owner": {"login": owner, "id": 1},
            "html_url": f"https://github.com/{full_name}",
            "clone_url": f"https://github.com/{full_name}.git",
            "ssh_url": f"git@github.com:{full_name}.git",
            "git_url": f"git://github.com/{full_name}.git",
        },
        "pusher": {"name": owner, "email": "dev@example.invalid"},
        "sender": {"login": owner, "id": 1},
        "commits": [],
        "head_commit": None,
    }


def gitlab_tag_push(path: str, host: str) -> dict[str, Any]:
    return {
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": "0" * 40,
        "after": "b" * 40,
        "ref": "refs/tags/v1.0",
        "checkout_sha": "b" * 40,
        "user_name": "Dev",
        "project_id": 1,
        "project": {
            "id": 1,
            "name": path.split("/")[-1],
            "web_url": f"https://{host}/{path}",
            "git_ssh_url": f"git@{host}:{path}.git",
            "git_http_url": f"https://{host}/{path}.git",
            "path_with_namespace": path,
            "default_branch": "main",
        },
        "commits": [],
        "total_commits_count": 0,
        "repository": {"name": path.split("/")[-1], "url": f"git@{host}:{path}.git"},
    }


def gitea_push(full_name: str, host: str) -> dict[str, Any]:
    return {
        "ref": "refs/tags/v1.0",
        "before": "0" * 40,
        "after": "c" * 40,
        "compare_url": "",
        "commits": [],
        "repository": {
            "id": 1,
            "name": full_name.split("/")[1],
            "full_name": full_name,
            "html_url": f"https://{host}/{full_name}",
            "clone_url": f"https://{host}/{full_name}.git",
            "ssh_url": f"git@{host}:{full_name}.git",
        },
        "pusher": {"login": "dev"},
        "sender": {"login": "dev"},
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(daemon: Daemon, host: str, payload: object, headers: dict[str, str]) -> httpx.Response:
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    with daemon.client() as client:
        return client.post(
            f"/hooks/{host}",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )


def github_headers(body: bytes, event: str = "push", secret: str = SECRET) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": f"sha256={sign(body, secret)}",
        "User-Agent": "GitHub-Hookshot/044aadd",
    }


def last_check(daemon: Daemon, name: str) -> float | None:
    repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
    return next(r for r in repos if r["name"] == name)["last_check"]


def test_webhooks(tmp_path: Path, wheelhouse: Daemon) -> None:
    # Without a secret the hooks are off.
    off = post(wheelhouse, "github", github_push("o/r"), {})
    assert off.status_code == 404
    assert "webhooks are off" in off.text

    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    # OWNER/REPO points at a directory of bare repositories: "GitHub" here is this machine.
    github = tmp_path / "github"
    source = git_project(tmp_path / "src", "hooked")
    tag_release(source, "1.0")
    (github / "owner").mkdir(parents=True)
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(source), str(github / "owner" / "hooked.git")],
        check=True,
    )
    config = (
        "[watcher]\nenabled = false\n"
        f'webhook-secret-file = "{secret_file}"\ngithub-url = "file://{github}"\n'
    )
    daemon = start(tmp_path / "d", wheelhouse, config)
    try:
        ctl(daemon, "repos", "add", "owner/hooked:hooked")
        ctl(daemon, "repos", "add", "https://gitlab.example.invalid/team/lib.git:lib")
        ctl(daemon, "repos", "add", "git@gitea.example.invalid:org/tool.git:tool")

        # GitHub: ping, then refusals that trigger nothing, then a signed tag push.
        ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
        assert post(daemon, "github", ping, github_headers(ping, "ping")).status_code == 200
        body = json.dumps(github_push("owner/hooked")).encode()
        wrong = post(daemon, "github", body, github_headers(body, secret="not-the-secret"))
        assert wrong.status_code == 401
        unsigned = github_headers(body)
        del unsigned["X-Hub-Signature-256"]
        assert post(daemon, "github", body, unsigned).status_code == 401
        tampered = body.replace(b"v1.0", b"v9.9")
        assert post(daemon, "github", tampered, github_headers(body)).status_code == 401
        huge = json.dumps({**github_push("owner/hooked"), "padding": "x" * 300_000}).encode()
        assert post(daemon, "github", huge, github_headers(huge)).status_code == 413
        branch = json.dumps(github_push("owner/hooked", ref="refs/heads/main")).encode()
        assert post(daemon, "github", branch, github_headers(branch)).status_code == 202
        unknown = json.dumps(github_push("someone/else")).encode()
        missing = post(daemon, "github", unknown, github_headers(unknown))
        assert missing.status_code == 404
        assert "no watched repository for someone/else" in missing.text
        assert last_check(daemon, "hooked") is None  # nothing above triggered a check

        pushed = post(daemon, "github", body, github_headers(body))
        assert pushed.status_code == 202
        assert pushed.text.strip() == "checking hooked"
        deadline = time.monotonic() + 180
        while not files_of(daemon, "hooked") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert set(files_of(daemon, "hooked")) == {
            "hooked-1.0-py2.py3-none-any.whl",
            "hooked-1.0.tar.gz",
        }

        # GitLab: the token header.
        tag_push = json.dumps(gitlab_tag_push("team/lib", "gitlab.example.invalid")).encode()
        gitlab = {"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": "wrong"}
        assert post(daemon, "gitlab", tag_push, gitlab).status_code == 401
        assert last_check(daemon, "lib") is None
        gitlab["X-Gitlab-Token"] = SECRET
        assert post(daemon, "gitlab", tag_push, gitlab).text.strip() == "checking lib"

        # Gitea: its own signature header (and the GitHub-style one).
        push = json.dumps(gitea_push("org/tool", "gitea.example.invalid")).encode()
        gitea = {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(push, "wrong")}
        assert post(daemon, "gitea", push, gitea).status_code == 401
        assert last_check(daemon, "tool") is None
        gitea["X-Gitea-Signature"] = sign(push)
        assert post(daemon, "gitea", push, gitea).text.strip() == "checking tool"

        # The triggered checks ran (these hosts do not exist: the checks fail, as they should).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and None in (
            last_check(daemon, "lib"),
            last_check(daemon, "tool"),
        ):
            time.sleep(0.3)
        assert last_check(daemon, "lib") is not None
        assert last_check(daemon, "tool") is not None
    finally:
        daemon.stop()
    assert SECRET not in daemon.log()


def test_webhooks_match_local_and_file_url_specs(tmp_path: Path, wheelhouse: Daemon) -> None:
    """A repository watched by `file://` URL or by path is the one a push names by that URL."""
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    config = f'[watcher]\nenabled = false\nwebhook-secret-file = "{secret_file}"\n'
    daemon = start(tmp_path / "d", wheelhouse, config)
    try:
        by_url = git_project(tmp_path / "src", "by-url")
        by_path = git_project(tmp_path / "src", "by-path")
        ctl(daemon, "repos", "add", f"file://{by_url}:by-url")
        ctl(daemon, "repos", "add", f"{by_path}:by-path")
        for name, repo in (("by-url", by_url), ("by-path", by_path)):
            url = f"file://{repo}.git"
            github = github_push(f"owner/{name}")
            github["repository"]["clone_url"] = url
            gitlab = gitlab_tag_push(f"team/{name}", "gitlab.example.invalid")
            gitlab["project"]["git_http_url"] = url
            gitea = gitea_push(f"org/{name}", "gitea.example.invalid")
            gitea["repository"]["clone_url"] = url
            for host, payload in (("github", github), ("gitlab", gitlab), ("gitea", gitea)):
                body = json.dumps(payload).encode()
                headers = {
                    "github": github_headers(body),
                    "gitlab": {"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": SECRET},
                    "gitea": {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body)},
                }[host]
                answer = post(daemon, host, body, headers)
                assert (answer.status_code, answer.text.strip()) == (202, f"checking {name}"), host
    finally:
        daemon.stop()
