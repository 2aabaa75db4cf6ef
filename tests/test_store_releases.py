"""The store's release rules (issue 23, item 5): a release is checked whole and published
together, and a removed version is remembered with its project, across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from insiders.errors import ReleaseDiffers, VersionRemoved
from insiders.ingest import publish_release
from insiders.names import normalize
from insiders.store import Store
from tests.support import make_wheel


def wheel(where: Path, version: str, payload: bytes = b"", tag: str = "py3-none-any") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"demo-{version}-{tag}.whl"
    path.write_bytes(make_wheel("demo", version, payload))
    return path


@pytest.mark.trio
async def test_a_release_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    assert await publish_release(store, [wheel(tmp_path / "a", "1.0")], bring_back=False)
    # A new file of 1.0 and the published one with other bytes: neither is published.
    files = [wheel(tmp_path / "b", "1.0", tag="py2-none-any"), wheel(tmp_path / "b", "1.0", b"x")]
    with pytest.raises(ReleaseDiffers) as refused:
        await publish_release(store, files, bring_back=False)
    assert refused.value.filename == "demo-1.0-py3-none-any.whl"
    assert [f.filename for f in store.get(normalize("demo")).files] == [  # type: ignore[union-attr]
        "demo-1.0-py3-none-any.whl"
    ]
    assert list((tmp_path / "data" / "incoming").iterdir()) == []


@pytest.mark.trio
async def test_a_removal_is_remembered_until_a_person_brings_it_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    await publish_release(store, [wheel(tmp_path / "a", "1.0")], bring_back=False)
    await publish_release(store, [wheel(tmp_path / "a", "2.0")], bring_back=False)
    await store.remove(normalize("demo"), version="1.0")
    store = Store.open(tmp_path / "data")  # a restart keeps it
    assert set(store.removed(normalize("demo"))) == {"1.0"}
    with pytest.raises(VersionRemoved, match=r"demo 1\.0\.0 was removed"):
        await publish_release(store, [wheel(tmp_path / "a", "1.0.0")], bring_back=False)
    assert await publish_release(store, [wheel(tmp_path / "a", "1.0")], bring_back=True)
    assert store.removed(normalize("demo")) == {}
    # The last version removed: the project is gone from the index, its removal is not.
    await store.remove(normalize("demo"), version="1.0")
    await store.remove(normalize("demo"), version="2.0")
    assert store.get(normalize("demo")) is None
    assert set(Store.open(tmp_path / "data").removed(normalize("demo"))) == {"1.0", "2.0"}
