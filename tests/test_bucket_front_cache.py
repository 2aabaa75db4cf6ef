"""The bucket front with insidersd's cache behind it: a hosted project whose dependency is public
installs through the front, the dependency coming through the daemon's file cache (cache mode),
and again with the upstream unplugged.

The front redirects a name the bucket does not host to `$insiders_bucket_upstream`; pointed at
insidersd's /simple/ (README, "Serve many machines"), that is the daemon in cache mode, which
serves the public name from its cache and never lets it shadow a hosted one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fronts import SeaweedFS, twine_upload, wait_for
from tests.static_upstream import StaticUpstream
from tests.support import Daemon, make_wheel, pip_install, wheel_filename
from tests.test_mirror_s3 import bucket_front, keyed_bucket_config, page_lists
from tests.test_upstream_files import cached_files


def installed(target: Path) -> set[str]:
    return {p.name.removesuffix(".dist-info") for p in target.glob("*.dist-info")}


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path / "seaweedfs").start()
    yield server
    server.stop()


def test_a_hosted_project_with_a_public_dependency_installs_through_the_bucket_front(
    weed: SeaweedFS, tmp_path: Path
) -> None:
    upstream = StaticUpstream(tmp_path / "upstream").start()
    public = tmp_path / wheel_filename("public-dep", "2.0")
    public.write_bytes(make_wheel("public-dep", "2.0"))
    upstream.add_dist(public)
    app = tmp_path / wheel_filename("team-app", "1.0")
    app.write_bytes(make_wheel("team-app", "1.0", requires=("public-dep>=2",)))

    bucket = f"front-{int(time.time())}"
    weed.client().create_bucket(Bucket=bucket)
    home = tmp_path / "daemon"
    keyed_bucket_config(home, weed, bucket, "team")
    daemon = Daemon(home, ["--upstream", upstream.index, "--upstream-mode", "cache"]).start()
    nginx = bucket_front(tmp_path, weed, bucket, "team", upstream=f"{daemon.url}/simple/")
    try:
        twine_upload(daemon.url, daemon.token, [app], tmp_path)
        assert wait_for(
            lambda: page_lists(weed, bucket, "team/simple/team-app/index.json", app.name)
        )

        # team-app from the bucket; public-dep redirected to insidersd, its file cached there.
        pip_install(f"{nginx.url}/simple/", tmp_path / "cold", "team-app")
        assert installed(tmp_path / "cold") == {"public_dep-2.0", "team_app-1.0"}
        assert f"public-dep/{public.name}" in cached_files(daemon)
        assert upstream.requests(f"/files/public-dep/{public.name}") <= 1

        # The upstream unplugged: the front and the daemon's cache install both, every time.
        upstream.stop()
        pip_install(f"{nginx.url}/simple/", tmp_path / "warm", "team-app")
        assert installed(tmp_path / "warm") == {"public_dep-2.0", "team_app-1.0"}
    finally:
        nginx.stop()
        daemon.stop()
        upstream.stop()
