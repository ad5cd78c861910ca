"""Code archives and data uploads from people: damaged archives, hostile entry names and file
names are refused with a PackagingError naming the field and the entry, never anything else."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import PATH_TRICKS, record
from trainyard.data.packaging import PackagingError, archive_files, unpack_archive, upload_directory
from trainyard.storage.local import LocalStore

NAMES = st.one_of(
    st.sampled_from(["train.py", "pkg/model.py", "./a.py", "dir/", "a//b.py"]),
    st.sampled_from(PATH_TRICKS),
    st.text(min_size=1, max_size=20),
    st.sampled_from(["x" * 300, "é" * 100, "C:/x", "a\tb", "\u202etxt.py"]),
)
KINDS = st.sampled_from(["file"] * 6 + ["dir", "symlink", "hardlink", "fifo"])
ENTRIES = st.lists(st.tuples(NAMES, KINDS, st.binary(max_size=20)), min_size=0, max_size=5)


def tar_bytes(entries: list[tuple[str, str, bytes]], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    mode: Literal["w", "w:gz"] = "w:gz" if compressed else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            info.type = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind == "file":
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.linkname = "/etc/passwd" if "link" in kind else ""
                tar.addfile(info)
    return buffer.getvalue()


def zip_bytes(entries: list[tuple[str, str, bytes]], method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, kind, content in entries:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            mode = {"symlink": 0o120777, "fifo": 0o010644}.get(kind, 0o100644)
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, str]:
    entries = draw(ENTRIES)
    suffix = draw(st.sampled_from([".tar", ".tar.gz", ".tgz", ".zip"]))
    if suffix == ".zip":
        data = zip_bytes(entries, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))
    else:
        data = tar_bytes(entries, compressed=suffix != ".tar")
    damage = draw(st.sampled_from(["none"] * 4 + ["flip", "cut", "junk", "swap"]))
    if damage == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1 :]
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "junk":
        data = draw(st.binary(max_size=300))
    elif damage == "swap":  # a zip named .tar.gz and the other way round
        suffix = ".tar.gz" if suffix == ".zip" else ".zip"
    return data, f"uploads/code{suffix}"


def check_packaging_error(error: BaseException, what: str) -> None:
    assert isinstance(error, PackagingError)
    assert str(error).startswith(f"{what}: "), str(error)
    assert len(str(error)) < 2000, len(str(error))


@pytest.mark.filterwarnings("ignore:Duplicate name")
@given(archives())
def test_hostile_code_archives(
    tmp_path_factory: pytest.TempPathFactory, archive: tuple[bytes, str]
) -> None:
    data, name = archive
    root = tmp_path_factory.getbasetemp() / "archive-store"
    shutil.rmtree(root, ignore_errors=True)  # as validate clears the job's code prefix first
    store = LocalStore(root)
    error = record(
        "unpack_archive",
        lambda: unpack_archive(store, data, name, "jobs/j/code", "code.uri"),
        (PackagingError,),
    )
    if error is not None:
        check_packaging_error(error, "code.uri")
    else:
        assert archive_files(data, name, "code.uri")


FILE_NAMES = st.one_of(
    st.sampled_from(
        ["a.csv", "sub/b.csv", ".git/x", "__pycache__/y", "x\\y", "\tz", "é.csv", "..."]
    ),
    st.text(
        alphabet=st.characters(blacklist_characters="/\x00", codec="utf-8"), min_size=1, max_size=30
    ),
).filter(lambda name: name not in (".", "..") and len(name.encode()) < 200)


@settings(max_examples=max(settings().max_examples // 3, 50))
@given(st.lists(FILE_NAMES, max_size=4, unique=True), st.booleans())
def test_hostile_upload_directories(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], with_symlink: bool
) -> None:
    base = tmp_path_factory.getbasetemp()
    local_dir, storage = base / "upload", base / "upload-store"
    shutil.rmtree(local_dir, ignore_errors=True)
    shutil.rmtree(storage, ignore_errors=True)
    local_dir.mkdir()
    for name in names:
        path = local_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.parent.is_dir() or path.exists():
            continue
        path.write_text("x")
    if with_symlink:
        (local_dir / "link").symlink_to("/etc/passwd")
    store = LocalStore(storage)
    error = record(
        "upload_directory",
        lambda: upload_directory(store, Path(local_dir), "datasets/x", "LOCAL_DIR"),
        (PackagingError,),
    )
    if error is not None:
        check_packaging_error(error, "LOCAL_DIR")
