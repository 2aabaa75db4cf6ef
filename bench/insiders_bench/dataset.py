"""The benchmark's data: synthetic but valid distributions, laid out for every server measured.

One generation makes, under the work directory:

    flat/                   every wheel and sdist in one directory (pypiserver serves this)
    store/packages/...      insidersd's store, written with `insiders.store`'s own structures
    static/simple/...       a PEP 503/691 tree of pre-rendered pages (nginx serves this)
    devpi-export/           a devpi-server export (dataindex.json + files) for `devpi-import`
    dataset.json            what was generated, so a later run with the same sizes reuses it

The distributions are real: a wheel is a zip with METADATA, WHEEL and a RECORD whose hashes match,
an sdist a tar.gz with PKG-INFO and a pyproject.toml, so pip and uv install them and every index
accepts them. Content is deterministic (fixed timestamps), so two generations hash the same.
The files are written once and hard-linked into the other layouts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from insiders.documents import render
from insiders.documents.model import hosted_page
from insiders.fsutil import atomic_write
from insiders.store import MANIFEST, Project, StoredFile, sort_files

FORMAT_VERSION = 3  # bump when the layout or the contents change, to regenerate
EPOCH = (2024, 1, 1, 0, 0, 0)
UPLOAD_TIME = 1_704_067_200.0  # 2024-01-01, in every manifest
BIG = "benchpkg-big"


@dataclass(frozen=True)
class Sizes:
    projects: int = 2000
    versions: int = 20
    big_versions: int = 2000

    @property
    def files(self) -> int:
        return 2 * (self.projects * self.versions + self.big_versions)


class _Under:
    """A folder of the dataset's, read as an attribute: `root / name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, dataset: Dataset, owner: type[Dataset]) -> Path:
        return dataset.root / self.name


@dataclass(frozen=True)
class Dataset:
    root: Path
    sizes: Sizes
    files: int
    #: a project with the default number of versions, used for page and install figures
    sample: str
    sample_version: str
    sample_wheel: str
    big: str

    #: the layouts under `root` (the module's docstring says what each holds)
    flat = _Under("flat")
    store = _Under("store")
    static = _Under("static")
    devpi_export = _Under("devpi-export")


def project_names(sizes: Sizes) -> list[str]:
    width = max(5, len(str(sizes.projects)))
    return [f"benchpkg-{i:0{width}d}" for i in range(sizes.projects)]


def versions_of(count: int) -> list[str]:
    # Spread over minor and patch numbers so PEP 440 order differs from string order.
    return [f"1.{i // 10}.{i % 10}" for i in range(count)]


# -- one distribution --------------------------------------------------------------------------


def _metadata(name: str, version: str) -> bytes:
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {name}\n"
        f"Version: {version}\n"
        f"Summary: Synthetic package {name} {version} for the insiders benchmark\n"
        "Requires-Python: >=3.8\n"
        "License: MIT\n"
        "\n"
        f"{name} {version}: a package that exists to be served.\n"
    ).encode()


def _module(name: str, version: str) -> bytes:
    return f'"""{name}"""\n\n__version__ = "{version}"\n'.encode()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def make_wheel(name: str, version: str, payload: int = 0) -> tuple[str, bytes]:
    """A pure-Python wheel; `payload` bytes of incompressible data make it as large as wanted."""
    stem = f"{name.replace('-', '_')}-{version}"
    module = name.replace("-", "_")
    dist_info = f"{stem}.dist-info"
    members: list[tuple[str, bytes]] = [
        (f"{module}/__init__.py", _module(name, version)),
        (f"{dist_info}/METADATA", _metadata(name, version)),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: insiders-bench\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        ),
    ]
    record = "".join(f"{path},{_record_hash(data)}\n" for path, data in members)
    record += f"{dist_info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in [*members, (f"{dist_info}/RECORD", record.encode())]:
            archive.writestr(zipfile.ZipInfo(path, EPOCH), data, zipfile.ZIP_DEFLATED)
    return f"{stem}-py3-none-any.whl", buffer.getvalue()


def write_big_wheel(directory: Path, name: str, version: str, size: int) -> Path:
    """A valid wheel of about `size` bytes, written in chunks (never whole in memory)."""
    stem = f"{name.replace('-', '_')}-{version}"
    module = name.replace("-", "_")
    dist_info = f"{stem}.dist-info"
    path = directory / f"{stem}-py3-none-any.whl"
    sha = hashlib.sha256()
    chunk = 1 << 20
    written = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        info = zipfile.ZipInfo(f"{module}/blob.bin", EPOCH)
        with archive.open(info, "w", force_zip64=True) as blob:
            while written < size:
                data = os.urandom(min(chunk, size - written))
                sha.update(data)
                blob.write(data)
                written += len(data)
        blob_hash = base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode()
        members = [
            (f"{module}/__init__.py", _module(name, version)),
            (f"{dist_info}/METADATA", _metadata(name, version)),
            (
                f"{dist_info}/WHEEL",
                b"Wheel-Version: 1.0\nGenerator: insiders-bench\nRoot-Is-Purelib: true\n"
                b"Tag: py3-none-any\n",
            ),
        ]
        record = f"{module}/blob.bin,sha256={blob_hash},{written}\n"
        record += "".join(f"{p},{_record_hash(d)}\n" for p, d in members)
        record += f"{dist_info}/RECORD,,\n"
        for member, data in [*members, (f"{dist_info}/RECORD", record.encode())]:
            archive.writestr(zipfile.ZipInfo(member, EPOCH), data)
    return path


def make_sdist(name: str, version: str) -> tuple[str, bytes]:
    stem = f"{name.replace('-', '_')}-{version}"
    module = name.replace("-", "_")
    pyproject = (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    ).encode()
    members = [
        (f"{stem}/PKG-INFO", _metadata(name, version)),
        (f"{stem}/pyproject.toml", pyproject),
        (f"{stem}/{module}/__init__.py", _module(name, version)),
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in members:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1_704_067_200
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    return f"{stem}.tar.gz", compressed


# -- the store and the other layouts -----------------------------------------------------------


def _stored(filename: str, version: str, content: bytes, metadata: bytes) -> StoredFile:
    return StoredFile(
        filename=filename,
        version=version,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        md5=hashlib.md5(content).hexdigest(),
        blake2b_256=hashlib.blake2b(content, digest_size=32).hexdigest(),
        upload_time=UPLOAD_TIME,
        requires_python=">=3.8",
        metadata_sha256=hashlib.sha256(metadata).hexdigest(),
    )


def _write_project(
    job: tuple[str, str, list[str], bool],
) -> tuple[str, list[dict[str, object]]]:
    """Write one project's files into the store and, unless the job is for the store alone,
    link them into flat/ and render its static pages (runs in a worker)."""
    root_text, name, versions, store_only = job
    root = Path(root_text)
    directory = root / "store" / "packages" / name
    directory.mkdir(parents=True, exist_ok=True)
    flat = root / "flat"
    stored: list[StoredFile] = []
    for version in versions:
        metadata = _metadata(name, version)
        for filename, content in (make_wheel(name, version), make_sdist(name, version)):
            (directory / filename).write_bytes(content)
            (directory / f"{filename}.metadata").write_bytes(metadata)
            if not store_only:
                link = flat / filename
                if not link.exists():
                    os.link(directory / filename, link)
            stored.append(_stored(filename, version, content, metadata))
    project = Project(name=name, files=sort_files(stored))
    atomic_write(directory / MANIFEST, _encode_project(project))
    if store_only:
        return name, []
    _write_static(root / "static", project)
    return name, [
        {"filename": f.filename, "version": f.version, "sha256": f.sha256} for f in project.files
    ]


def _encode_project(project: Project) -> bytes:
    import msgspec

    return msgspec.json.encode(project)


def _write_static(static: Path, project: Project) -> None:
    """The project's pages as files, exactly as the daemon renders them (for nginx)."""
    model = hosted_page(project)
    directory = static / "simple" / project.normalized
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_bytes(render.project_html(model))
    (directory / "index.json").write_bytes(render.project_json(model))


def _devpi_export(dataset: Dataset, listing: dict[str, list[dict[str, object]]]) -> None:
    """A devpi-server export dump (format 2) of one private index, `bench/dev`.

    devpi imports it with `devpi-import --hard-links`, far faster than uploading 80,000 files
    over HTTP one by one; the result is the same as an upload (devpi rehashes every file).
    """
    export = dataset.devpi_export
    shutil.rmtree(export, ignore_errors=True)
    projects: dict[str, dict[str, dict[str, object]]] = {}
    files: list[dict[str, object]] = []
    for name, entries in sorted(listing.items()):
        versions: dict[str, dict[str, object]] = {}
        for entry in entries:
            version = str(entry["version"])
            filename = str(entry["filename"])
            versions.setdefault(
                version,
                {
                    "name": name,
                    "version": version,
                    "summary": f"Synthetic package {name} {version} for the insiders benchmark",
                    "requires_python": ">=3.8",
                },
            )
            relpath = f"bench/dev/{name}/{version}/{filename}"
            target = export / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(dataset.flat / filename, target)
            files.append(
                {
                    "type": "releasefile",
                    "projectname": name,
                    "relpath": relpath,
                    "version": version,
                    "entrymapping": {
                        "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                        "hashes": {"sha256": entry["sha256"]},
                    },
                    "log": [],
                }
            )
        projects[name] = versions
    data = {
        "dumpversion": "2",
        "pythonversion": [3, 11, 0, "final", 0],
        "devpi_server": "6.0.0",
        "users": {
            "bench": {"username": "bench", "created": "2024-01-01T00:00:00Z"},
        },
        "indexes": {
            "bench/dev": {
                "indexconfig": {
                    "type": "stage",
                    "bases": [],
                    "volatile": True,
                    "acl_upload": ["bench"],
                    "acl_toxresult_upload": [":ANONYMOUS:"],
                    "mirror_whitelist": [],
                },
                "projects": projects,
                "files": files,
            }
        },
    }
    (export / "dataindex.json").write_text(json.dumps(data))


def _write_static_root(static: Path, names: list[str]) -> None:
    directory = static / "simple"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_bytes(render.root_html(sorted(names)))
    (directory / "index.json").write_bytes(render.root_json(sorted(names)))


def _jobs(
    root: Path, sizes: Sizes, store_only: bool = False
) -> Iterator[tuple[str, str, list[str], bool]]:
    yield (str(root), BIG, versions_of(sizes.big_versions), store_only)
    for name in project_names(sizes):
        yield (str(root), name, versions_of(sizes.versions), store_only)


def generate(
    root: Path, sizes: Sizes, *, workers: int = 2, log: bool = True, store_only: bool = False
) -> Dataset:
    """Make (or reuse, when the same sizes were made before) the dataset under `root`.

    `store_only`: insidersd's store alone, no flat/, static/ or devpi export (the scaling
    benchmark's stores, up to a million files, which only insidersd serves).
    """
    names = project_names(sizes)
    sample = names[len(names) // 2]
    sample_version = versions_of(sizes.versions)[-1]
    dataset = Dataset(
        root=root,
        sizes=sizes,
        files=sizes.files,
        sample=sample,
        sample_version=sample_version,
        sample_wheel=make_wheel(sample, sample_version)[0],
        big=BIG,
    )
    marker = root / "dataset.json"
    wanted: dict[str, object] = {"format": FORMAT_VERSION, "sizes": asdict(sizes)}
    if store_only:
        wanted["store_only"] = True
    if marker.exists():
        try:
            if {
                k: v for k, v in json.loads(marker.read_text()).items() if k != "seconds"
            } == wanted:
                return dataset
        except (ValueError, OSError):
            pass
    if log:
        print(f"generating {sizes.files:,} files in {root} ...", flush=True)
    started = time.monotonic()
    for sub in ("flat", "store", "static", "devpi-export", "dataset.json"):
        path = root / sub
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (root / ("store" if store_only else "flat")).mkdir(parents=True)
    listing: dict[str, list[dict[str, object]]] = {}
    jobs = list(_jobs(root, sizes, store_only))
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(workers) as pool:
            for done, (name, files) in enumerate(pool.map(_write_project, jobs, chunksize=16)):
                listing[name] = files
                if log and done and done % (500 if len(jobs) < 5000 else 5000) == 0:
                    print(f"  {done:,}/{len(jobs):,} projects", flush=True)
    else:
        for name, files in map(_write_project, jobs):
            listing[name] = files
    if not store_only:
        _write_static_root(root / "static", list(listing))
        _devpi_export(dataset, listing)
    seconds = time.monotonic() - started
    marker.write_text(json.dumps({**wanted, "seconds": round(seconds, 1)}))
    if log:
        print(f"generated {sizes.files:,} files in {seconds:.0f} s", flush=True)
    return dataset
