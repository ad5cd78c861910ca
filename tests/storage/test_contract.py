"""The ObjectStore contract, run against every backend: a directory and a real S3 server (moto).

Components are tested on LocalStore and deployed on S3; these tests are what makes that safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devkit.s3_server import FAST_RETRY, S3Server, free_port, running_s3_server
from trainyard.jobs.checkpoints import DigestingReader, file_digest
from trainyard.storage import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    open_store,
)
from trainyard.storage.config import LocalStorageConfig, S3StorageConfig
from trainyard.storage.local import TMP_SUFFIX, LocalStore
from trainyard.storage.s3 import RetryPolicy, S3Store

BINARY = bytes(range(256)) * 41  # every byte value, not a multiple of any buffer size


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bytes_round_trip_and_overwrite(store: ObjectStore) -> None:
    store.put_bytes("a/b.bin", BINARY)
    assert store.get_bytes("a/b.bin") == BINARY
    store.put_bytes("a/b.bin", b"second")
    assert store.get_bytes("a/b.bin") == b"second"
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(BINARY)
    store.put_file("files/model.bin", source)
    target = tmp_path / "new" / "nested" / "model.bin"
    store.get_file("files/model.bin", target)
    assert target.read_bytes() == BINARY
    target.write_bytes(b"stale")
    store.get_file("files/model.bin", target)
    assert target.read_bytes() == BINARY


def test_missing_key_raises_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("present/x", b"x")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("absent")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("present")  # a folder is not an object
    with pytest.raises(ObjectNotFound):
        store.get_json("present/x/deeper")
    with pytest.raises(ObjectNotFound):
        store.get_file("absent", tmp_path / "out")
    with pytest.raises(ObjectNotFound):
        store.copy("absent", "elsewhere")
    assert not (tmp_path / "out").exists()
    assert keys(store) == ["present/x"]


def test_list_is_recursive_sorted_and_sized(store: ObjectStore) -> None:
    for key, size in [("b/2", 2), ("a/z/deep/1", 1), ("a/y", 3), ("c", 0), ("a/Y", 4)]:
        store.put_bytes(key, b"x" * size)
    assert list(store.list()) == [
        ObjectInfo("a/Y", 4),
        ObjectInfo("a/y", 3),
        ObjectInfo("a/z/deep/1", 1),
        ObjectInfo("b/2", 2),
        ObjectInfo("c", 0),
    ]
    assert keys(store, "a") == ["a/Y", "a/y", "a/z/deep/1"]


def test_list_respects_prefix_boundaries(store: ObjectStore) -> None:
    for key in ["a/b/x", "a/b/y/z", "a/bc/x", "a/b.txt", "ab"]:
        store.put_bytes(key, b"1")
    assert keys(store, "a/b") == ["a/b/x", "a/b/y/z"]
    assert keys(store, "a/b/") == ["a/b/x", "a/b/y/z"]
    assert keys(store, "a") == ["a/b.txt", "a/b/x", "a/b/y/z", "a/bc/x"]
    assert keys(store, "a/b/x") == []  # an object is not a folder
    assert keys(store, "missing") == []


def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    for key in ["a/b/x", "a/b/y/z", "a/bc/x", "keep"]:
        store.put_bytes(key, b"1")
    store.delete("keep")
    store.delete("keep")  # deleting a missing key is fine
    store.delete("a/b")  # so is deleting a folder's name: it is no object
    store.delete_prefix("a/b")
    assert keys(store) == ["a/bc/x"]


def test_deleted_folder_name_can_become_an_object(store: ObjectStore) -> None:
    store.put_bytes("step/data/file", b"1")
    store.delete("step/data/file")
    store.put_bytes("step", b"now an object")
    assert list(store.list()) == [ObjectInfo("step", 13)]


def test_exists(store: ObjectStore) -> None:
    store.put_bytes("dir/obj", b"1")
    assert store.exists("dir/obj")
    assert not store.exists("dir")
    assert not store.exists("dir/other")


def test_json_round_trip(store: ObjectStore) -> None:
    value = {"step": 7, "files": {"model.bin": {"size": 3}}, "note": "ü", "none": None}
    store.put_json("jobs/j/job.json", value)
    assert store.get_json("jobs/j/job.json") == value


def test_upload_download_dir_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    files = {
        "model.bin": BINARY,
        "empty": b"",
        "nested/deeper/state.json": b'{"a": 1}',
        "nested/with space.txt": "ü\n".encode(),
    }
    for relative, data in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)

    written = store.upload_dir(source, "up/run")
    assert written == sorted(f"up/run/{relative}" for relative in files)
    assert keys(store) == written

    target = tmp_path / "target"
    paths = store.download_dir("up/run", target)
    assert sorted(paths) == sorted(target / relative for relative in files)
    assert tree(target) == files


def test_copy_prefix(store: ObjectStore) -> None:
    store.put_bytes("src/a", b"a")
    store.put_bytes("src/sub/b", BINARY)
    store.put_bytes("srcx/not-copied", b"x")
    assert store.copy_prefix("src", "dst/inner") == ["dst/inner/a", "dst/inner/sub/b"]
    assert store.get_bytes("dst/inner/sub/b") == BINARY
    assert store.get_bytes("src/sub/b") == BINARY
    # Copying into its own subtree terminates: the listing is taken first.
    assert store.copy_prefix("src", "src/again") == ["src/again/a", "src/again/sub/b"]
    assert keys(store, "src") == ["src/a", "src/again/a", "src/again/sub/b", "src/sub/b"]


BAD_KEYS = [
    pytest.param("/abs", id="absolute"),
    pytest.param("../x", id="parent"),
    pytest.param("a/../b", id="inner-parent"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("./a", id="dot"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"1")
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"1")
    with pytest.raises(InvalidKey):
        store.put_file(key, source)
    with pytest.raises(InvalidKey):
        store.get_bytes(key)
    with pytest.raises(InvalidKey):
        store.get_file(key, tmp_path / "out")
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)
    with pytest.raises(InvalidKey):
        store.read_with_token(key)
    with pytest.raises(InvalidKey):
        store.write_if(key, b"1", None)
    if key:  # '' is the whole store as a prefix
        with pytest.raises(InvalidKey):
            list(store.list(key))
    assert keys(store) == []


def test_folder_names_are_not_object_keys(store: ObjectStore) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes("a/", b"1")
    with pytest.raises(InvalidKey):
        store.get_bytes("a/")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("with space/file name.bin", id="spaces"),
        pytest.param("ünï/cødé 漢字.bin", id="unicode"),
        pytest.param("odd/a+b=c&d?e#f%20g.bin", id="url-characters"),
    ],
)
def test_unusual_keys_round_trip(store: ObjectStore, key: str) -> None:
    store.put_bytes(key, BINARY)
    assert store.get_bytes(key) == BINARY
    assert list(store.list()) == [ObjectInfo(key, len(BINARY))]
    assert store.exists(key)
    store.delete(key)
    assert keys(store) == []


# Conditional writes


def test_write_if_absent_creates_once(store: ObjectStore) -> None:
    assert store.write_if("cas/x", b"first", None)
    assert not store.write_if("cas/x", b"second", None)
    assert store.get_bytes("cas/x") == b"first"
    assert keys(store) == ["cas/x"], "no lock or temp files show"


def test_write_if_with_a_stale_token_leaves_the_value(store: ObjectStore) -> None:
    store.put_bytes("cas/x", b"one")
    data, token = store.read_with_token("cas/x")
    assert data == b"one"
    assert store.write_if("cas/x", b"two", token)
    data, newer = store.read_with_token("cas/x")
    assert (data, newer != token) == (b"two", True)

    assert not store.write_if("cas/x", b"three", token)
    assert not store.write_if("cas/x", b"three", None)
    assert store.get_bytes("cas/x") == b"two"
    assert store.write_if("cas/x", b"three", newer)
    assert store.get_bytes("cas/x") == b"three"


def test_write_if_on_a_deleted_object_is_a_conflict(store: ObjectStore) -> None:
    store.put_bytes("cas/x", b"one")
    _, token = store.read_with_token("cas/x")
    store.delete("cas/x")
    assert not store.write_if("cas/x", b"two", token)
    assert not store.exists("cas/x")
    with pytest.raises(ObjectNotFound):
        store.read_with_token("cas/x")


def test_racing_compare_and_swap_loses_no_update(store: ObjectStore) -> None:
    store.put_bytes("counter", b"0")

    def increment(times: int) -> None:
        for _ in range(times):
            while True:  # the CAS loop every caller of write_if runs
                data, token = store.read_with_token("counter")
                if store.write_if("counter", str(int(data) + 1).encode(), token):
                    break

    threads = [threading.Thread(target=increment, args=(20,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_bytes("counter") == b"40"


def test_a_conditionally_written_folder_can_become_an_object(store: ObjectStore) -> None:
    assert store.write_if("step/data", b"1", None)
    store.delete("step/data")
    store.put_bytes("step", b"now an object")
    assert list(store.list()) == [ObjectInfo("step", 13)]


# LocalStore


def test_local_refuses_symlinks_leading_outside_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "storage"
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "link").symlink_to(outside / "secret")
    store = LocalStore(root)

    for key in ["escape/secret", "link"]:
        with pytest.raises(InvalidKey, match="outside"):
            store.get_bytes(key)
    with pytest.raises(InvalidKey):
        store.put_bytes("escape/new/file", b"x")
    with pytest.raises(InvalidKey):
        list(store.list("escape"))
    assert keys(store) == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_local_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "storage")
    store.put_bytes("real/x", b"x")
    (store.root / "alias").symlink_to(store.root / "real", target_is_directory=True)
    assert store.get_bytes("alias/x") == b"x"


def test_local_writes_leave_no_temp_files_and_list_skips_crashed_ones(
    local_store: LocalStore,
) -> None:
    local_store.put_bytes("a/x", b"1")
    local_store.put_bytes("a/x", b"2")
    assert os.listdir(local_store.root / "a") == ["x"]
    (local_store.root / "a" / f".x.0123{TMP_SUFFIX}").write_bytes(b"partial")
    assert keys(local_store) == ["a/x"]
    with pytest.raises(InvalidKey, match="reserved"):
        local_store.put_bytes(f"a/y{TMP_SUFFIX}", b"1")


def test_local_compare_and_swap_holds_across_processes(local_store: LocalStore) -> None:
    local_store.put_bytes("counter", b"0")
    code = (
        "import sys; from pathlib import Path; from trainyard.storage.local import LocalStore\n"
        "store = LocalStore(Path(sys.argv[1]))\n"
        "for _ in range(20):\n"
        "    while True:\n"
        "        data, token = store.read_with_token('counter')\n"
        "        if store.write_if('counter', str(int(data) + 1).encode(), token):\n"
        "            break\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(local_store.root)]) for _ in range(3)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0]
    assert local_store.get_bytes("counter") == b"60"


def test_local_describe_is_the_directory(tmp_path: Path) -> None:
    assert LocalStore(tmp_path / "s").describe() == str((tmp_path / "s").resolve())


# S3Store


def test_s3_prefix_only_sees_its_own_objects(s3_store: S3Store) -> None:
    tenant_a = S3Store(s3_store.client, s3_store.bucket, "tenants/a/", retry=FAST_RETRY)
    tenant_ab = S3Store(s3_store.client, s3_store.bucket, "tenants/ab", retry=FAST_RETRY)
    tenant_a.put_bytes("x", b"a")
    tenant_ab.put_bytes("x", b"ab")
    tenant_ab.put_bytes("nested/y", b"ab")

    assert tenant_a.describe() == f"s3://{s3_store.bucket}/tenants/a"
    assert keys(tenant_a) == ["x"]
    assert keys(tenant_ab) == ["nested/y", "x"]
    assert tenant_a.get_bytes("x") == b"a"
    with pytest.raises(ObjectNotFound):
        tenant_a.get_bytes("nested/y")
    tenant_a.delete_prefix("")
    assert keys(s3_store) == ["tenants/ab/nested/y", "tenants/ab/x"]


def test_s3_missing_bucket_is_a_storage_error(s3_server: S3Server, s3_store: S3Store) -> None:
    store = S3Store(s3_store.client, "no-such-bucket", retry=FAST_RETRY)
    with pytest.raises(StorageError, match="NoSuchBucket") as raised:
        store.get_bytes("x")
    assert not isinstance(raised.value, ObjectNotFound)
    assert "s3://no-such-bucket" in str(raised.value)
    assert s3_server.endpoint in str(raised.value)


def test_s3_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("TRAINYARD_S3_SECRET_KEY", "s")
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store.from_config(
        S3StorageConfig(endpoint=endpoint, bucket="unreachable"), retry=FAST_RETRY
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match=endpoint) as raised:
        store.ensure_bucket()
    assert time.monotonic() - started < 5
    assert "s3://unreachable" in str(raised.value)


def test_s3_outage_fails_fast_and_a_short_one_is_ridden_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own server: stopping the shared one would break other tests.
    with running_s3_server(tmp_path) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = S3Store.from_config(server.config("outage"), retry=FAST_RETRY)
        store.ensure_bucket()
        store.put_bytes("before", b"kept")

        server.stop()
        started = time.monotonic()
        with pytest.raises(StorageError, match=server.endpoint):
            store.get_bytes("before")
        assert time.monotonic() - started < 5

        patient = S3Store(
            store.client,
            store.bucket,
            retry=RetryPolicy(attempts=20, initial_wait=0.1, max_wait=0.2),
        )
        restart = threading.Timer(0.5, server.start)
        restart.start()
        try:
            assert patient.get_bytes("before") == b"kept"  # data survives the outage
        finally:
            restart.join()


def test_s3_stream_upload_retried_after_an_outage_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream was read once by the failed try: the retry must rewind it, and the digest
    # taken while reading must describe what was finally uploaded.
    source = tmp_path / "shard.bin"
    source.write_bytes(os.urandom(6 * 2**20) + BINARY)  # above minio's 5 MiB part size
    with running_s3_server(tmp_path) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = S3Store.from_config(
            server.config("stream-outage"),
            retry=RetryPolicy(attempts=20, initial_wait=0.1, max_wait=0.2),
        )
        store.ensure_bucket()
        server.stop()
        restart = threading.Timer(0.5, server.start)
        restart.start()
        try:
            with source.open("rb") as file:
                reader = DigestingReader(file)
                store.put_stream("ckpt/shard.bin", reader, source.stat().st_size)
        finally:
            restart.join()

        assert store.get_bytes("ckpt/shard.bin") == source.read_bytes()
    assert reader.digest() == file_digest(source)


# open_store


def test_open_store_picks_the_backend(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = open_store(LocalStorageConfig(root=tmp_path / "s"))
    assert isinstance(local, LocalStore)
    assert local.describe() == str((tmp_path / "s").resolve())

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3 = open_store(s3_server.config("open-store", prefix="t"))
    assert isinstance(s3, S3Store)
    assert s3.describe() == "s3://open-store/t"


def test_importing_storage_does_not_import_minio() -> None:
    code = "import sys, trainyard.storage; assert 'minio' not in sys.modules, 'minio imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
