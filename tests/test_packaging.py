"""Uploading people's directories: nested files, tool caches left out, symlinks refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.packaging import PackagingError, upload_directory
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
