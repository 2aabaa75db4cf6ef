"""The wire protocol as data: frames, the two tagged unions, limits, and schema evolution."""

from __future__ import annotations

import contextlib
import struct
from typing import get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insidersctl import protocol as p
from insidersctl.output import to_json
from tests.control_fixtures import tagged_maps

REQUESTS: list[p.Request | p.Hello] = [
    p.Hello(client="0.1.0"),
    p.Status(),
    p.ServerStatus(),
    p.ListRepos(),
    p.AddRepo(spec="owner/repo:dist", cwd="/home/x", versions="since", since="1.0"),
    p.RemoveRepo(name="dist"),
    p.SetRepo(name="dist", versions="since", since="1.0", publish_to=("corp",), local=False),
    p.Update(names=("a", "b"), force=True, wait=False),
    p.WatcherControl(action="stop"),
    p.Logs(),
    p.Reload(),
    p.ListTokens(),
    p.CreateToken(name="ci", scope="read"),
    p.CreateToken(name="ci", projects=("demo",), expires=2e9),
    p.RevokeToken(name="ci"),
    p.ListProjects(),
    p.ShowProject(name="demo"),
    p.SetProjectStatus(name="demo", status="archived", reason="moved"),
    p.Yank(project="demo", version="1.0", reason="broken"),
    p.Unyank(project="demo", version="1.0"),
    p.Remove(project="demo", filename="demo-1.0.tar.gz", dry_run=True),
    p.ListMirrors(),
    p.SyncMirror(name="web"),
    p.SyncMirror(name="web", adopt=True),
    p.SyncMirror(name="web", force=True),
    p.VerifyMirror(name="web"),
    p.CacheStatus(),
    p.PruneCache(),
    p.PruneCache(older_than=86400.0, names=("demo-pkg",)),
    p.FetchCache(requirements=("demo-pkg==1.0",), platforms=("win_amd64",)),
]

REPLIES: list[p.ServerMessage] = [
    p.Welcome(daemon="0.1.0", pid=42),
    p.Error(code=p.REFUSED, message="no"),
    p.Progress(repo="demo", stage="building", version="1.0", time=1.5),
    p.StatusReport(
        version="0.1.0",
        pid=1,
        uptime=3.0,
        now=4.0,
        repos=(p.RepoInfo(name="demo", source="o/r", kind="github"),),
    ),
    p.ServerReport(index_urls=("http://127.0.0.1:1",)),
    p.RepoList(repos=(p.RepoInfo(name="demo", source="/src", kind="path"),)),
    p.RepoAdded(repo=p.RepoInfo(name="demo", source="/src", kind="path")),
    p.RepoRemoved(repo=p.RepoInfo(name="demo", source="/src", kind="path")),
    p.RepoChanged(repo=p.RepoInfo(name="demo", source="/src", kind="path"), changed=("versions",)),
    p.UpdateReport(results=(p.RepoOutcome(repo="demo", outcome="published", versions=("1",)),)),
    p.WatcherReport(watcher=p.WatcherInfo(available=True, state="running")),
    p.LogsLocation(journal=True, unit="insiders.service", user=True),
    p.Reloaded(),
    p.TokenList(tokens=(p.TokenInfo(name="ci", scope="read", created=1.0),)),
    p.TokenCreated(token=p.TokenInfo(name="ci", scope="read", created=1.0), secret="s"),
    p.TokenRevoked(name="ci"),
    p.ProjectList(projects=(p.ProjectInfo(name="demo", versions=1, files=2),)),
    p.ProjectDetail(
        name="demo", files=(p.FileInfo(filename="f", version="1", size=1, sha256="0"),)
    ),
    p.ProjectStatusSet(name="demo", status="archived", reason="moved"),
    p.YankDone(project="demo", version="1", yanked=True, changed=2),
    p.Removed(project="demo", files=("f",)),
    p.MirrorList(
        mirrors=(
            p.MirrorInfo(name="web", kind="directory", location="/srv/m", state="failing", lag=2.5),
        ),
        now=5.0,
    ),
    p.MirrorSynced(mirror=p.MirrorInfo(name="b", kind="s3", location="s3://b/"), files=3, pages=9),
    p.MirrorVerified(
        name="b", checked=2, differs=(p.MirrorDifference(key="files/a/a.whl", problem="missing"),)
    ),
    p.CacheReport(mode="cache", size=10, limit=100, files=1, hits=3, misses=1, oldest=1.0, now=2.0),
    p.CachePruned(files=1, size=10),
    p.CacheFetched(fetched=2, cached=1, size=10, failures=("x: no such project upstream",)),
]


def _body(frame: bytes) -> bytes:
    reader = p.FrameReader()
    reader.feed(frame)
    body = reader.next_frame()
    assert body is not None
    assert reader.pending == 0
    return body


def test_every_message_type_is_covered_by_these_tests() -> None:
    assert {type(m) for m in REQUESTS} == set(get_args(p.ClientMessage))
    assert {type(m) for m in REPLIES} == set(get_args(p.ServerMessage))


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_requests_round_trip(message: p.Request) -> None:
    assert p.decode_client_message(_body(p.encode_frame(message))) == message


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_replies_round_trip(message: p.ServerMessage) -> None:
    assert p.decode_server_message(_body(p.encode_frame(message))) == message


def test_a_frame_is_a_big_endian_length_then_msgpack() -> None:
    frame = p.encode_frame(p.Status())
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    assert msgspec.msgpack.decode(frame[4:]) == {"type": "status"}


def test_tags_are_unique_per_direction() -> None:
    for union in (p.ClientMessage, p.ServerMessage):
        tags = [t.__struct_config__.tag for t in get_args(union)]
        assert len(tags) == len(set(tags))


def test_hello_never_changes_shape() -> None:
    """Every version of the daemon must understand every client's first frame."""
    assert msgspec.msgpack.decode(_body(p.encode_frame(p.Hello(client="9")))) == {
        "type": "hello",
        "protocol": p.PROTOCOL_VERSION,
        "minor": p.PROTOCOL_MINOR,
        "client": "9",
    }


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        (b"", p.BadMessage, "truncated"),
        (b"\xc1", p.BadMessage, "malformed"),
        (msgspec.msgpack.encode(5), p.BadMessage, "Expected `object`"),
        (msgspec.msgpack.encode({"no": "type"}), p.BadMessage, "type"),
        (msgspec.msgpack.encode({"type": "frobnicate"}), p.UnknownMessage, "frobnicate"),
        (msgspec.msgpack.encode({"type": "yank", "project": "x"}), p.BadMessage, "version"),
        (msgspec.msgpack.encode({"type": "update", "names": 3}), p.BadMessage, "names"),
        (
            msgspec.msgpack.encode({"type": "tokens-create", "name": "x", "scope": "admin"}),
            p.BadMessage,
            "scope",
        ),
    ],
)
def test_bad_messages_say_what_is_wrong(body: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        p.decode_client_message(body)


def test_unknown_reply_type_is_told_apart() -> None:
    with pytest.raises(p.UnknownMessage) as caught:
        p.decode_server_message(msgspec.msgpack.encode({"type": "new-in-2.0", "x": 1}))
    assert caught.value.tag == "new-in-2.0"


def test_newer_peers_extra_fields_are_ignored() -> None:
    """A newer daemon adds fields; this client reads what it knows."""
    newer = msgspec.msgpack.encode(
        {"type": "welcome", "protocol": 1, "minor": 7, "daemon": "2.0", "pid": 3, "features": [1]}
    )
    assert p.decode_server_message(newer) == p.Welcome(protocol=1, minor=7, daemon="2.0", pid=3)


def test_older_peers_missing_fields_take_defaults() -> None:
    """An older client leaves out fields added later; they all have defaults."""
    older = msgspec.msgpack.encode({"type": "repos-add", "spec": "o/r:d"})
    assert p.decode_client_message(older) == p.AddRepo(spec="o/r:d")
    assert p.decode_client_message(msgspec.msgpack.encode({"type": "hello"})) == p.Hello()


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    reader = p.FrameReader(limit=100)
    reader.feed(struct.pack(">I", 101))
    with pytest.raises(p.FrameTooLarge, match="101 bytes exceeds the limit of 100"):
        reader.next_frame()
    with pytest.raises(p.FrameTooLarge):
        p.encode_frame(p.Error(code="x", message="y" * 200), limit=100)


def test_frames_split_anywhere_reassemble() -> None:
    stream = b"".join(p.encode_frame(m) for m in REQUESTS)
    for chunk in (1, 2, 3, 7, 64):
        reader = p.FrameReader()
        bodies = []
        for i in range(0, len(stream), chunk):
            reader.feed(stream[i : i + chunk])
            while (body := reader.next_frame()) is not None:
                bodies.append(body)
        assert [p.decode_client_message(b) for b in bodies] == REQUESTS


@settings(database=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 50), min_size=1))
def test_framing_is_lossless_however_the_bytes_arrive(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    reader = p.FrameReader()
    received = []
    position, i = 0, 0
    while position < len(stream):
        step = cuts[i % len(cuts)]
        reader.feed(stream[position : position + step])
        position += step
        i += 1
        while (body := reader.next_frame()) is not None:
            received.append(body)
    assert received == bodies
    assert reader.pending == 0


@settings(max_examples=500, database=None)
@given(st.binary(max_size=200) | tagged_maps)
def test_decoding_anything_raises_only_protocol_errors(body: bytes) -> None:
    for decode in (p.decode_client_message, p.decode_server_message):
        with contextlib.suppress(p.ProtocolError):
            decode(body)


def test_json_output_is_the_protocols_field_names() -> None:
    """`insidersctl --json` prints replies as they are: renaming a field breaks scripts."""
    report = p.StatusReport(version="1", pid=2, uptime=3.0, now=4.0)
    assert list(msgspec.json.decode(to_json(report))) == [
        "type",
        "index_urls",
        "projects",
        "files",
        "upstream",
        "upstream_mode",
        "data_dir",
        "uptime",
        "version",
        "pid",
        "now",
        "socket",
        "watcher",
        "repos",
        "restart_needed",
        "mirrors",
    ]
    repo = msgspec.json.decode(to_json(p.RepoInfo(name="d", source="o/r", kind="github")))
    assert set(repo) >= {"name", "source", "last_check", "last_published", "last_error", "log"}


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0),
        ([], 0),
        ([1, "x" * 300, b"y" * 70_000, 2.5, -3, 2**40, None], 1),
        ({"a": [1, {"b": [True]}]}, 4),
        ([[[[[1]]]]], 5),
        ([[], [[]], [[[0]]]], 4),
        (msgspec.msgpack.Ext(1, b"z" * 300), 0),
    ],
)
def test_too_deep_counts_nested_containers(value: object, depth: int) -> None:
    from insidersctl.nesting import too_deep

    body = msgspec.msgpack.encode(value)
    assert not too_deep(body, depth)
    assert too_deep(body, depth - 1) is (depth > 0)


def test_a_request_nested_too_deeply_is_a_bad_message() -> None:
    """A typed decoder skips unknown fields recursively: 60,000 levels were a RecursionError."""
    body = b"\x82\xa4type\xa6status\xa5extra" + b"\x91" * 60_000 + b"\xc0"
    with pytest.raises(p.BadMessage, match="nested deeper"):
        p.decode_client_message(body)
    shallow = b"\x82\xa4type\xa6status\xa5extra" + b"\x91" * 3 + b"\xc0"
    assert p.decode_client_message(shallow) == p.Status()
