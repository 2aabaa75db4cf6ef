"""Push triggers through the real daemon: payloads in the shapes GitHub, GitLab and Gitea document,
signed and mis-signed; a signed GitHub tag push builds and publishes at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from insiders.errors import HookRefused
from insiders.index import hooks
from tests.support import Daemon, following_log, git, git_project, tag_release, wait_for_line
from tests.test_watcher import ctl, files_of, start, watching, wheelhouse

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
        "X-GitHub-Delivery": str(uuid.uuid4()),  # each delivery has its own
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
    with watching(tmp_path / "d", wheelhouse, config) as daemon:
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
    assert SECRET not in daemon.log()


# -- who may reach the hooks, and what a delivery costs ---------------------------------------


def hooked_daemon(tmp_path: Path, wheelhouse: Daemon, config: str = "") -> Daemon:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    github = tmp_path / "github"
    config = (
        f'[watcher]\nenabled = false\nwebhook-secret-file = "{secret_file}"\n'
        f'github-url = "file://{github}"\n{config}'
    )
    return start(tmp_path / "d", wheelhouse, config)


def bare_clone(source: Path, github: Path, owner_repo: str) -> Path:
    bare = github / f"{owner_repo}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", "--bare", str(source), str(bare)], check=True)
    return bare


def test_hooks_are_delivered_to_an_index_with_read_tokens(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """GitHub cannot send a read token: the hooks stay outside the read gate (they are signed)."""
    daemon = hooked_daemon(tmp_path, wheelhouse, '[server]\nread-access = "token"\n')
    try:
        ping = json.dumps({"zen": "Design for failure.", "hook_id": 2}).encode()
        answer = post(daemon, "github", ping, github_headers(ping, "ping"))
        assert answer.status_code == 200, answer.text
        assert answer.text.strip() == "pong: the secret matches"
        forged = post(daemon, "github", ping, github_headers(ping, "ping", secret="guess"))
        assert forged.status_code == 401
        assert "bad or missing signature" in forged.text
        assert "www-authenticate" not in forged.headers
        # Everything else still needs a read token.
        with daemon.client() as client:
            assert client.get("/simple/").status_code == 401
    finally:
        daemon.stop()


def repo_record(daemon: Daemon, name: str) -> dict[str, Any]:
    repos = json.loads(ctl(daemon, "repos", "list", "--json").stdout)["repos"]
    found: dict[str, Any] = next(r for r in repos if r["name"] == name)
    return found


def failed_attempts(record: dict[str, Any]) -> dict[str, int]:
    states = record["version_states"]
    return {v["version"]: v["attempts"] for v in states if v["status"] == "failed"}


BROKEN = (
    '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
    '[project]\nname = "flaky"\nversion = "0.0.0"\ndependencies = ["not a spec"]\n'
)


def test_a_replayed_push_starts_nothing_and_a_new_tag_is_built_while_paused(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    source = git_project(tmp_path / "src", "flaky", pyproject=BROKEN)
    tag_release(source, "0.1")
    bare = bare_clone(source, tmp_path / "github", "owner/flaky")
    daemon = hooked_daemon(tmp_path, wheelhouse)  # the watcher is paused (enabled = false)
    try:
        ctl(daemon, "repos", "add", "owner/flaky:flaky")
        body = json.dumps(github_push("owner/flaky", ref="refs/tags/v0.1")).encode()
        delivery = github_headers(body)
        with following_log(daemon) as lines:
            first = post(daemon, "github", body, delivery)
            assert (first.status_code, first.text.strip()) == (202, "checking flaky")
            wait_for_line(lines, "flaky 0.1: python -m build failed", timeout=300)
        before = repo_record(daemon, "flaky")
        assert failed_attempts(before) == {"0.1": 1}, before

        # The same delivery again (GitHub's "Redeliver", or a replay): answered, nothing done.
        again = post(daemon, "github", body, delivery)
        assert (again.status_code, again.text.strip()) == (
            200,
            "this delivery was handled already: nothing to do",
        )
        # The delivery id is not signed: a replay under fresh ids is a push of a known tag, left
        # to the periodic check (paused here; else with the failed version's backoff).
        for n in range(15):
            headers = {**delivery, "X-GitHub-Delivery": f"replayed-{n}"}
            replay = post(daemon, "github", body, headers)
            assert replay.status_code == 200, replay.text
            assert "v0.1 is not a new version of flaky: nothing to do now" in replay.text
        after = repo_record(daemon, "flaky")
        assert after["last_check"] == before["last_check"]
        assert after["version_states"] == before["version_states"]

        # A new tag is checked at once, paused or not; the failed version keeps its backoff.
        (source / "pyproject.toml").write_text(BROKEN.replace('["not a spec"]', "[]"))
        tag_release(source, "0.2")
        git(source, "push", "--quiet", str(bare), "main", "--tags")
        pushed = json.dumps(github_push("owner/flaky", ref="refs/tags/v0.2")).encode()
        with following_log(daemon) as lines:
            answer = post(daemon, "github", pushed, github_headers(pushed))
            assert (answer.status_code, answer.text.strip()) == (202, "checking flaky")
            wait_for_line(lines, "flaky 0.2: published", timeout=300)
        assert "flaky-0.2.tar.gz" in files_of(daemon, "flaky")
        assert failed_attempts(repo_record(daemon, "flaky")) == {"0.1": 1}
    finally:
        daemon.stop()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]


async def anonymous_bodies(port: int, count: int, size: int) -> dict[str, int]:
    """`count` deliveries at once, each a `size`-byte body whose signature is made up, sent as
    an attacker would: all but its last KiB, then (once every one is that far) the rest. Their
    answers: the status line, or how the connection ended."""
    answers: dict[str, int] = {}
    started = 0
    all_started = trio.Event()
    head = (
        b"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % size
    )

    async def one() -> None:
        nonlocal started
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):  # answered and closed already
                await stream.send_all(head + b"x" * (size - 1024))
            started += 1
            if started == count:
                all_started.set()
            await all_started.wait()
            try:
                await stream.send_all(b"x" * 1024)
                answer = (await stream.receive_some(64)).split(b"\r\n")[0].decode()
            except trio.BrokenResourceError:
                answer = "closed while sending"
            answers[answer] = answers.get(answer, 0) + 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return answers


def test_an_anonymous_flood_costs_a_fixed_amount_of_memory(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """1,000 bodies of 250 KiB with made-up signatures, 200 at once: the hooks hold a fixed
    budget of unverified bytes, not each body until it ends. Holding each body took 100 MB after
    the first 200 and 167 MB after 600, and kept it. What is left (14 to 58 MB measured, as the
    allocator keeps what it had at the peak) is the HTTP layer's own cost of 200 connections that
    send bodies, the same for refused uploads; the bound sits between the two."""
    daemon = hooked_daemon(tmp_path, wheelhouse)
    try:
        assert daemon.proc is not None
        port = int(daemon.url.rsplit(":", 1)[1])
        idle = rss_mb(daemon.proc.pid)
        answers: dict[str, int] = {}
        for _ in range(5):
            for answer, count in trio.run(anonymous_bodies, port, 200, 250 * 1024).items():
                answers[answer] = answers.get(answer, 0) + count
        grown = rss_mb(daemon.proc.pid) - idle
        assert grown < 85, f"RSS grew by {grown:.0f} MB: {answers}"
        assert set(answers) <= {"HTTP/1.1 401 ", "HTTP/1.1 503 ", "closed while sending"}, answers
        assert answers.get("HTTP/1.1 503 ", 0) > 0, answers  # the budget was used up
        # A body that does not say its size is counted as it comes: over 256 KiB, 413.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\n"
                b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (300_000, b"x" * 300_000)
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
        # The hooks still answer a real delivery: the budget was given back.
        ping = json.dumps({"zen": "Half measures are as bad as nothing at all."}).encode()
        assert post(daemon, "github", ping, github_headers(ping, "ping")).status_code == 200
    finally:
        daemon.stop()


def test_a_trickled_body_loses_its_share_of_the_budget(tmp_path: Path, wheelhouse: Daemon) -> None:
    """A sender that announces a body and sends it slowly is answered 408 after BODY_DEADLINE
    (10 s), long before the HTTP layer's own deadline, and what it held is given back."""
    daemon = hooked_daemon(tmp_path, wheelhouse)
    try:
        host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\n"
                b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n"
                b"Content-Length: 262144\r\n\r\n" + b"x" * 200_000
            )
            began = time.monotonic()
            answer = sock.recv(100)  # nothing more is sent: the daemon ends it
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert 9 < time.monotonic() - began < 60  # the HTTP layer would wait 420 s
        ping = json.dumps({"zen": "Speak like a human."}).encode()
        assert post(daemon, "github", ping, github_headers(ping, "ping")).status_code == 200
    finally:
        daemon.stop()


def test_the_budget_is_given_back_whatever_ends_a_body() -> None:
    """What a body took from the shared budget is given back when it ends: complete, too large,
    over the budget, cut short, or late."""
    budget = hooks.Budget(hooks.UNVERIFIED_BUDGET)

    def receiving(*messages: dict[str, Any], then_wait: bool = False) -> Any:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            if not queue and then_wait:
                await trio.sleep_forever()
            return queue.pop(0)

        return receive

    chunk = {"type": "http.request", "body": b"x" * 100_000, "more_body": True}
    cases = [
        (receiving({"type": "http.request", "body": b"{}"}), None),
        (receiving(chunk, chunk, chunk), 413),
        (receiving(chunk, {"type": "http.disconnect"}), 400),
        (receiving(chunk, then_wait=True), 408),
    ]

    async def main() -> None:
        for receive, status in cases:
            # The mock clock jumps over the 10 s of the late one.
            if status is None:
                assert await hooks._read_body(receive, budget, None) == b"{}"
            else:
                with pytest.raises(HookRefused) as refused:
                    await hooks._read_body(receive, budget, None)
                assert refused.value.status == status
            assert budget.held == 0
        budget.held = budget.total - 10  # another request holds nearly all of it
        with pytest.raises(HookRefused) as refused:
            await hooks._read_body(receiving(chunk), budget, None)
        assert refused.value.status == 503
        assert budget.held == budget.total - 10

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_long_paths_are_cut_in_log_lines(tmp_path: Path, wheelhouse: Daemon) -> None:
    """Fifty requests with 60 KB paths must not write megabytes of log (and rotate the history
    away): a path or value quoted in a log line is cut."""
    daemon = hooked_daemon(tmp_path, wheelhouse)
    log_file = daemon.data_dir / "insidersd.log"
    try:
        before = log_file.stat().st_size
        with daemon.client() as client:
            answers = [client.post(f"/hooks/{n}{'x' * 60_000}", content=b"{}") for n in range(50)]
        written = log_file.read_bytes()[before:].decode()
        lines = [line for line in written.splitlines() if "webhook" in line]
        assert len(written) < 50 * 1000, f"{len(written)} bytes of log"
        assert len(lines) == 50, lines[:3]
        assert all(len(line) < 600 for line in lines), max(map(len, lines))
        assert all("xxx…" in line for line in lines)
        # The answers quote the path cut as well.
        assert {answer.status_code for answer in answers} == {404}
        assert all(len(answer.content) < 1000 for answer in answers)
    finally:
        daemon.stop()


def test_webhooks_match_local_and_file_url_specs(tmp_path: Path, wheelhouse: Daemon) -> None:
    """A repository watched by `file://` URL or by path is the one a push names by that URL."""
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    config = f'[watcher]\nenabled = false\nwebhook-secret-file = "{secret_file}"\n'
    with watching(tmp_path / "d", wheelhouse, config) as daemon:
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
