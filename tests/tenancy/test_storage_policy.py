"""Tenants' keys on an S3 server that checks them: each tenant's reach its own storage only.

The IAM users of moto's authenticating server get exactly `tenant_storage_policy`, the policy
`trainyard tenants policy` prints for MinIO.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devkit.s3_server import FAST_RETRY, S3Server, running_s3_server
from trainyard.storage import ObjectStore, StorageCredentials, StorageError
from trainyard.storage.config import S3StorageConfig
from trainyard.storage.s3 import S3Store
from trainyard.tenancy.storage_policy import tenant_storage_policy

#: Two tenants with a bucket each, two sharing a bucket under their own prefix.
TENANTS = {
    "acme": ("acme-bucket", ""),
    "globex": ("globex-bucket", ""),
    "initech": ("shared-bucket", "initech"),
    "hooli": ("shared-bucket", "hooli"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3_server(tmp_path_factory.mktemp("s3-auth"), authenticate=True) as server:
        yield server


@pytest.fixture(scope="module")
def keys(server: S3Server) -> dict[str, StorageCredentials]:
    admin = StorageCredentials(server.access_key, server.secret_key)
    for bucket in {bucket for bucket, _ in TENANTS.values()}:
        S3Store.from_config(server.config(bucket), credentials=admin).ensure_bucket()
    made = {name: server.tenant_keys(name, config(server, name)) for name in TENANTS}
    for name in TENANTS:  # every tenant's storage holds an object, written with its own keys
        store(server, name, made[name]).put_bytes("datasets/own.csv", f"{name} rows".encode())
    return made


def config(server: S3Server, tenant: str) -> S3StorageConfig:
    bucket, prefix = TENANTS[tenant]
    return server.config(bucket, prefix)


def store(server: S3Server, tenant: str, credentials: StorageCredentials) -> ObjectStore:
    return S3Store.from_config(config(server, tenant), credentials=credentials, retry=FAST_RETRY)


ACTIONS: dict[str, Callable[[ObjectStore], object]] = {
    "read": lambda s: s.get_bytes("datasets/own.csv"),
    "write": lambda s: s.put_bytes("stolen/x", b"x"),
    "list": lambda s: list(s.list("")),
    "delete": lambda s: s.delete("datasets/own.csv"),
}


PAIRS = (
    [pytest.param("acme", "globex", action, id=f"other-bucket-{action}") for action in ACTIONS]
    + [
        pytest.param("globex", "acme", action, id=f"other-bucket-reverse-{action}")
        for action in ACTIONS
    ]
    + [
        pytest.param("acme", "initech", action, id=f"bucket-of-two-other-tenants-{action}")
        for action in ACTIONS
    ]
    + [
        # Not "list": its prefix restriction is a policy condition (s3:prefix), which moto does
        # not evaluate (MinIO and S3 do); the policy test below asserts the condition instead.
        pytest.param("initech", "hooli", action, id=f"same-bucket-other-prefix-{action}")
        for action in ACTIONS
        if action != "list"
    ]
)


@pytest.mark.parametrize(("holder", "target", "action"), PAIRS)
def test_keys_cannot_reach_another_tenants_storage(
    server: S3Server, keys: dict[str, StorageCredentials], holder: str, target: str, action: str
) -> None:
    with pytest.raises(StorageError, match="AccessDenied"):
        ACTIONS[action](store(server, target, keys[holder]))
    assert store(server, target, keys[target]).get_bytes("datasets/own.csv") == (
        f"{target} rows".encode()
    )


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_keys_reach_their_own_storage(
    server: S3Server, keys: dict[str, StorageCredentials], tenant: str
) -> None:
    own = store(server, tenant, keys[tenant])
    own.put_bytes(f"checkpoints/{tenant}", b"weights")
    assert own.get_bytes(f"checkpoints/{tenant}") == b"weights"
    assert {info.key for info in own.list("checkpoints")} == {f"checkpoints/{tenant}"}
    own.delete(f"checkpoints/{tenant}")
    assert not own.exists(f"checkpoints/{tenant}")
    own.put_bytes(f"checkpoints/{tenant}/step-1/state.pt", b"weights")
    own.delete_prefix("checkpoints")  # one batch request, as retention prunes
    assert not own.exists(f"checkpoints/{tenant}/step-1/state.pt")


def test_unknown_keys_are_refused(server: S3Server, keys: dict[str, StorageCredentials]) -> None:
    forged = StorageCredentials("AKIAFORGED0000000000", "not-a-secret")
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        store(server, "acme", forged).get_bytes("datasets/own.csv")


@pytest.mark.parametrize(
    ("prefix", "objects", "listing_condition"),
    [
        pytest.param("", "arn:aws:s3:::b/*", None, id="whole-bucket"),
        pytest.param(
            "team/a", "arn:aws:s3:::b/team/a/*", {"s3:prefix": ["team/a", "team/a/*"]}, id="prefix"
        ),
    ],
)
def test_policy_names_only_the_tenants_bucket_or_prefix(
    prefix: str, objects: str, listing_condition: dict[str, list[str]] | None
) -> None:
    policy = tenant_storage_policy(
        S3StorageConfig(endpoint="minio:9000", bucket="b", prefix=prefix)
    )
    listing, rw, batch_delete = policy["Statement"]
    assert listing["Resource"] == ["arn:aws:s3:::b"]
    assert listing.get("Condition", {}).get("StringLike") == listing_condition
    assert rw["Resource"] == [objects]
    assert batch_delete["Action"] == ["s3:DeleteObject"]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert not any(a == "*" or a.endswith(":*") for s in policy["Statement"] for a in s["Action"])


def test_cli_prints_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from operators.deployment.cli import app  # the `trainyard tenants` group

    config = tmp_path / "trainyard.yaml"
    config.write_text(
        "work_dir: w\ntenants:\n"
        "  - {name: acme, storage: {kind: s3, endpoint: 'minio:9000', bucket: acme, prefix: tr}}\n"
        "  - {name: globex, storage: {kind: local, root: g}}\n"
    )
    monkeypatch.setenv("TRAINYARD_CONFIG", str(config))

    printed = CliRunner().invoke(app, ["policy", "acme"])
    refused = CliRunner().invoke(app, ["policy", "globex"])

    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == tenant_storage_policy(
        S3StorageConfig(endpoint="minio:9000", bucket="acme", prefix="tr")
    )
    assert refused.exit_code == 2
    assert "local storage" in refused.output
