"""Uploading people's directories and code archives: nested files, tool caches left out,
links, absolute names and '..' refused before anything is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from trainyard.data.packaging import PackagingError, is_archive, unpack_archive, upload_directory
from trainyard.limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES
from trainyard.storage.local import LocalStore

PREFIX = "jobs/acme.digits-mlp.20261124-215908-abcd/code"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def keys(store: LocalStore) -> list[str]:
    return [info.key for info in store.list()]


def test_nested_files_are_uploaded_under_the_prefix(
    local_store: LocalStore, tmp_path: Path
) -> None:
    code = write(
        tmp_path / "code",
        {"train.py": "print(1)", "pkg/model.py": "M = 1", "pkg/conf/base.yaml": "lr: 0.1"},
    )

    written = upload_directory(local_store, code, PREFIX, "code.path")

    expected = [f"{PREFIX}/pkg/conf/base.yaml", f"{PREFIX}/pkg/model.py", f"{PREFIX}/train.py"]
    assert sorted(written) == expected
    assert keys(local_store) == expected
    assert local_store.get_bytes(f"{PREFIX}/pkg/conf/base.yaml") == b"lr: 0.1"


def test_caches_and_git_are_skipped(local_store: LocalStore, tmp_path: Path) -> None:
    code = write(
        tmp_path / "code",
        {
            "train.py": "print(1)",
            "__pycache__/train.cpython-311.pyc": "bytecode",
            "pkg/__pycache__/model.cpython-311.pyc": "bytecode",
            ".git/HEAD": "ref: refs/heads/main",
            ".git/objects/ab/cdef": "blob",
            "pkg/model.py": "M = 1",
        },
    )

    upload_directory(local_store, code, PREFIX, "code.path")

    assert keys(local_store) == [f"{PREFIX}/pkg/model.py", f"{PREFIX}/train.py"]


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("data.csv", id="link-to-a-file"),
        pytest.param("pkg/secrets", id="link-to-a-directory"),
    ],
)
def test_symlinks_are_refused_naming_the_file(
    local_store: LocalStore, tmp_path: Path, link: str
) -> None:
    code = write(tmp_path / "code", {"train.py": "print(1)", "pkg/model.py": "M = 1"})
    outside = write(tmp_path / "outside", {"id_rsa": "private"})
    (code / link).symlink_to(outside / "id_rsa" if link == "data.csv" else outside)

    with pytest.raises(PackagingError) as raised:
        upload_directory(local_store, code, PREFIX, "code.path")

    message = str(raised.value)
    assert message.startswith("code.path:")
    assert f"{link} is a symbolic link" in message
    assert keys(local_store) == [], "nothing is uploaded from a refused directory"


@pytest.mark.parametrize(
    ("files", "create", "problem"),
    [
        pytest.param({}, True, "holds no files", id="empty-directory"),
        pytest.param(
            {"__pycache__/x.pyc": "b", ".git/HEAD": "r"},
            True,
            "holds no files",
            id="only-skipped-files",
        ),
        pytest.param({}, False, "is not a directory", id="missing-directory"),
    ],
)
def test_empty_or_missing_directory_is_refused_naming_what(
    local_store: LocalStore, tmp_path: Path, files: dict[str, str], create: bool, problem: str
) -> None:
    directory = tmp_path / "digits"
    if create:
        directory.mkdir()
        write(directory, files)

    with pytest.raises(PackagingError) as raised:
        upload_directory(local_store, directory, "datasets/digits", "LOCAL_DIR")

    assert str(raised.value) == f"LOCAL_DIR: {directory} {problem}"


def test_a_file_instead_of_a_directory_is_refused(local_store: LocalStore, tmp_path: Path) -> None:
    path = write(tmp_path, {"train.py": "print(1)"}) / "train.py"

    with pytest.raises(PackagingError, match=r"^code\.path: .* is not a directory"):
        upload_directory(local_store, path, PREFIX, "code.path")


def tar_archive(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar archive of regular files (name, content) and hand-made members (links, ...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, content = entry
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tar_member(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def zip_archive(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip archive of (name, content, unix mode) entries; a link is a S_IFLNK mode."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


FILE_MODE = stat.S_IFREG | 0o644
LINK_MODE = stat.S_IFLNK | 0o777
GOOD_FILES = [("train.py", b"print(1)"), ("pkg/model.py", b"M = 1")]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param(
            "code.tar.gz",
            tar_archive(
                [
                    tar_member("./", tarfile.DIRTYPE),
                    ("./train.py", b"print(1)"),
                    tar_member("./pkg", tarfile.DIRTYPE),
                    ("./pkg/model.py", b"M = 1"),
                ]
            ),
            id="tar-gz-with-dot-slash-names",
        ),
        pytest.param("code.tar", tar_archive(list(GOOD_FILES), mode="w"), id="plain-tar"),
        pytest.param(
            "code.zip",
            zip_archive(
                [("pkg/", b"", stat.S_IFDIR | 0o755)] + [(*f, FILE_MODE) for f in GOOD_FILES]
            ),
            id="zip",
        ),
    ],
)
def test_a_clean_archive_unpacks_its_files_under_the_prefix(
    local_store: LocalStore, name: str, data: bytes
) -> None:
    written = unpack_archive(local_store, data, name, PREFIX, "code.uri")

    assert sorted(written) == [f"{PREFIX}/pkg/model.py", f"{PREFIX}/train.py"]
    assert local_store.get_bytes(f"{PREFIX}/pkg/model.py") == b"M = 1"


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, tar_member("data", tarfile.SYMTYPE, "/etc/passwd")]),
            "entry 'data' is a symbolic link",
            id="tar-symlink-outside",
        ),
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, tar_member("pkg/alias.py", tarfile.SYMTYPE, "model.py")]),
            "entry 'pkg/alias.py' is a symbolic link",
            id="tar-symlink-inside-the-archive",
        ),
        pytest.param(
            "code.tgz",
            tar_archive([*GOOD_FILES, tar_member("copy.py", tarfile.LNKTYPE, "train.py")]),
            "entry 'copy.py' is a hard link",
            id="tar-hardlink",
        ),
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, ("../../escape.py", b"x")]),
            "entry '../../escape.py' leaves the archive ('..')",
            id="tar-dotdot",
        ),
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, ("pkg/../../escape.py", b"x")]),
            "entry 'pkg/../../escape.py' leaves the archive ('..')",
            id="tar-dotdot-inside-a-path",
        ),
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, ("/etc/cron.d/job", b"x")]),
            "entry '/etc/cron.d/job' has an absolute name",
            id="tar-absolute",
        ),
        pytest.param(
            "code.tar",
            tar_archive([*GOOD_FILES, tar_member("dev/null", tarfile.CHRTYPE)], mode="w"),
            "entry 'dev/null' is a special file",
            id="tar-device",
        ),
        pytest.param(
            "code.tar.gz",
            tar_archive([*GOOD_FILES, ("pkg\\..\\..\\escape.py", b"x")]),
            "has a backslash in its name",
            id="tar-backslash",
        ),
        pytest.param(
            "code.zip",
            zip_archive([(*f, FILE_MODE) for f in GOOD_FILES] + [("data", b"/etc", LINK_MODE)]),
            "entry 'data' is a symbolic link",
            id="zip-symlink",
        ),
        pytest.param(
            "code.zip",
            zip_archive([(*f, FILE_MODE) for f in GOOD_FILES] + [("../escape.py", b"x", 0)]),
            "entry '../escape.py' leaves the archive ('..')",
            id="zip-dotdot",
        ),
        pytest.param(
            "code.zip",
            zip_archive([(*f, FILE_MODE) for f in GOOD_FILES] + [("/abs.py", b"x", 0)]),
            "entry '/abs.py' has an absolute name",
            id="zip-absolute",
        ),
        pytest.param(
            "code.zip",
            zip_archive([(*f, FILE_MODE) for f in GOOD_FILES] + [("C:/abs.py", b"x", 0)]),
            "entry 'C:/abs.py' has an absolute name",
            id="zip-drive-letter",
        ),
        pytest.param("code.tar.gz", b"not an archive", "is not a readable archive", id="garbage"),
    ],
)
def test_an_unsafe_archive_is_refused_whole_naming_the_field_and_the_entry(
    local_store: LocalStore, name: str, data: bytes, problem: str
) -> None:
    with pytest.raises(PackagingError) as raised:
        unpack_archive(local_store, data, name, PREFIX, "code.uri")

    message = str(raised.value)
    assert message.startswith(f"code.uri: {name} ")
    assert problem in message
    assert keys(local_store) == [], "nothing of a refused archive is written"


def test_every_bad_entry_is_named_at_once(local_store: LocalStore) -> None:
    data = tar_archive([("../a.py", b"x"), tar_member("b", tarfile.SYMTYPE, "/"), ("/c.py", b"x")])

    with pytest.raises(PackagingError) as raised:
        unpack_archive(local_store, data, "code.tar.gz", PREFIX, "code.path")

    assert str(raised.value) == (
        "code.path: code.tar.gz cannot be unpacked: entry '../a.py' leaves the archive ('..'); "
        "entry 'b' is a symbolic link; entry '/c.py' has an absolute name"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("code.tar.gz", True, id="tar-gz"),
        pytest.param("jobs/x/CODE.ZIP", True, id="zip-any-case"),
        pytest.param("code/train", False, id="a-prefix"),
        pytest.param("code.gz", False, id="gzip-alone"),
    ],
)
def test_archives_are_known_by_their_suffix(name: str, expected: bool) -> None:
    assert is_archive(name) is expected


def zip_bomb(declared: int, actual: int) -> bytes:
    """A zip whose one entry declares `declared` bytes but inflates to `actual` (zeros)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.bin", b"\0" * actual)
    data = bytearray(buffer.getvalue())
    size = actual.to_bytes(4, "little")
    for offset in (i for i in range(len(data) - 3) if data[i : i + 4] == size):
        data[offset : offset + 4] = declared.to_bytes(4, "little")  # local and central headers
    return bytes(data)


@pytest.mark.parametrize(
    ("archive", "name", "problem"),
    [
        pytest.param(
            b"\0" * (MAX_ARCHIVE_BYTES + 1), "code.tar", "more than the limit of", id="archive-size"
        ),
        pytest.param(
            tar_archive([(f"f{i}.py", b"") for i in range(MAX_ARCHIVE_ENTRIES + 1)], mode="w"),
            "code.tar",
            f"more than {MAX_ARCHIVE_ENTRIES:,} entries",
            id="entries",
        ),
        pytest.param(
            zip_bomb(declared=1000, actual=10**6),
            "code.zip",
            "is not a readable archive",  # read no further than declared: the CRC fails
            id="zip-lying-about-its-size",
        ),
        pytest.param(
            tar_archive([(f"{'x' * 300}.py", b"x")]),
            "code.tar.gz",
            "has a name longer than 255 bytes",
            id="long-name",
        ),
        pytest.param(
            b"PK\x03\x04" + b"\0" * 40, "code.zip", "is not a readable archive", id="junk"
        ),
        pytest.param(
            zip_archive([("", b"x", FILE_MODE)]),
            "code.zip",
            "has an empty name",
            id="zip-empty-name",
        ),
        pytest.param(
            tar_archive([("a", b"x"), ("a/b", b"y")]),
            "code.tar.gz",
            "entry 'a/b' is inside 'a', which is a file",
            id="file-and-folder",
        ),
    ],
)
def test_archives_beyond_the_limits_are_refused_before_anything_is_written(
    local_store: LocalStore, archive: bytes, name: str, problem: str
) -> None:
    with pytest.raises(PackagingError) as raised:
        unpack_archive(local_store, archive, name, PREFIX, "code.uri")

    assert str(raised.value).startswith(f"code.uri: {name} ")
    assert problem in str(raised.value)
    assert keys(local_store) == []


def test_an_upload_file_name_that_cannot_be_a_key_is_refused_naming_it(
    local_store: LocalStore, tmp_path: Path
) -> None:
    path = write(tmp_path / "data", {"a.csv": "x", "b\\c.csv": "y"})

    with pytest.raises(PackagingError, match=r"^LOCAL_DIR: 'b\\\\c.csv' has a backslash"):
        upload_directory(local_store, path, PREFIX, "LOCAL_DIR")
    assert keys(local_store) == []
