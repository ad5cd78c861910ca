"""The job's snapshot of its code: a prefix copied, an archive checked whole and unpacked."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from trainyard.failures import UserError
from trainyard.jobs.code import snapshot_code
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.submission import example_manifest
from trainyard.storage.local import LocalStore

LAYOUT = JobLayout("acme.digits-mlp.20261124-215908-abcd")


def tar_gz(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (symlinks or {}).items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    return buffer.getvalue()


def manifest_with_code(uri: str) -> Any:
    return parse_manifest(example_manifest("acme") | {"code": {"uri": uri}})


def test_a_code_archive_in_storage_is_unpacked_into_the_jobs_code(local_store: LocalStore) -> None:
    local_store.put_bytes("uploads/code.tar.gz", tar_gz({"train.py": b"print(1)"}))

    snapshot_code(local_store, manifest_with_code("uploads/code.tar.gz"), LAYOUT)

    assert [info.key for info in local_store.list(LAYOUT.code)] == [f"{LAYOUT.code}/train.py"]


@pytest.mark.parametrize(
    ("archive", "problem"),
    [
        pytest.param(
            tar_gz({"train.py": b"x"}, symlinks={"creds": "/var/run/secrets/token"}),
            "entry 'creds' is a symbolic link",
            id="symlink",
        ),
        pytest.param(tar_gz({"../../jobs/other/x.py": b"x"}), "leaves the archive", id="dotdot"),
    ],
)
def test_an_unsafe_code_archive_fails_validation_naming_code_uri(
    local_store: LocalStore, archive: bytes, problem: str
) -> None:
    local_store.put_bytes("uploads/code.tar.gz", archive)

    with pytest.raises(UserError) as raised:
        snapshot_code(local_store, manifest_with_code("uploads/code.tar.gz"), LAYOUT)

    assert raised.value.cause.startswith("code.uri: uploads/code.tar.gz cannot be unpacked")
    assert problem in raised.value.cause
    assert "tar -czf" in raised.value.fix
    assert list(local_store.list(LAYOUT.code)) == []


def test_a_missing_code_archive_names_code_uri(local_store: LocalStore) -> None:
    with pytest.raises(UserError, match=r"^code\.uri: no archive 'uploads/code\.zip'"):
        snapshot_code(local_store, manifest_with_code("uploads/code.zip"), LAYOUT)


def test_a_code_prefix_is_copied_into_the_jobs_code(local_store: LocalStore) -> None:
    local_store.put_bytes("uploads/code/train.py", b"print(1)")

    snapshot_code(local_store, manifest_with_code("uploads/code"), LAYOUT)

    assert local_store.get_bytes(f"{LAYOUT.code}/train.py") == b"print(1)"


def test_an_empty_code_prefix_names_code_uri(local_store: LocalStore) -> None:
    with pytest.raises(UserError, match=r"^code\.uri: no files under 'uploads/nothing'"):
        snapshot_code(local_store, manifest_with_code("uploads/nothing"), LAYOUT)
