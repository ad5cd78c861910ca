"""The CLI's local paths: bad submissions stop before any API call, data upload, download."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from trainyard.cli import app
from trainyard.config import CONFIG_ENV
from trainyard.storage.local import LocalStore

VALID = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"path": "code"},
    "command": "python train.py",
    "resources": {"memory": "2Gi"},
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config with two local tenants; the API URL points at a port nobody listens on."""
    config = {
        "work_dir": "work",
        "tenants": [
            {"name": name, "storage": {"kind": "local", "root": f"storage/{name}"}}
            for name in ("acme", "globex")
        ],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    monkeypatch.setenv("TRAINYARD_API_URL", f"http://127.0.0.1:{closed_port()}")
    return tmp_path


def store_of(deployment: Path, tenant: str) -> LocalStore:
    return LocalStore(deployment / "storage" / tenant)


def stored_keys(deployment: Path, tenant: str) -> list[str]:
    return [info.key for info in store_of(deployment, tenant).list()]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def text_of(result: Result) -> str:
    """Everything the command printed, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def manifest_file(directory: Path, **changes: object) -> Path:
    code = directory / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text("print('training')\n")
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump({**VALID, **changes}))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"resources": {"memory": "lots"}}, "resources.memory", id="bad-memory-unit"),
        pytest.param({"epochs": 8}, "epochs", id="unknown-field"),
        pytest.param({"command": ""}, "command", id="empty-command"),
        pytest.param({"data": {"path": "../acme-secrets"}}, "data.path", id="path-leaves-storage"),
    ],
)
def test_invalid_manifest_exits_2_naming_the_field(
    deployment: Path, changes: dict[str, object], field: str
) -> None:
    result = invoke("submit", str(manifest_file(deployment, **changes)))

    assert result.exit_code == 2, result.output
    assert f"{field}:" in text_of(result)
    assert "Traceback" not in result.output
    assert stored_keys(deployment, "acme") == [], "a rejected job leaves nothing in storage"


def test_unknown_tenant_exits_2_listing_the_known_tenants(deployment: Path) -> None:
    result = invoke("submit", str(manifest_file(deployment, tenant="initech")))

    assert result.exit_code == 2, result.output
    output = text_of(result)
    assert "tenant:" in output
    assert "unknown tenant 'initech'" in output
    assert "acme, globex" in output


def test_data_upload_writes_into_the_tenants_storage(deployment: Path) -> None:
    local = deployment / "digits"
    (local / "test").mkdir(parents=True)
    (local / "train.csv").write_text("pixel0,label\n0,1\n")
    (local / "test" / "test.csv").write_text("pixel0,label\n3,4\n")

    result = invoke("data", "upload", str(local), "./datasets/digits/", "--tenant", "globex")

    assert result.exit_code == 0, result.output
    assert "uploaded 2 files" in text_of(result)
    assert stored_keys(deployment, "globex") == [
        "datasets/digits/test/test.csv",
        "datasets/digits/train.csv",
    ]
    assert store_of(deployment, "globex").get_bytes("datasets/digits/train.csv") == (
        b"pixel0,label\n0,1\n"
    )
    assert stored_keys(deployment, "acme") == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        pytest.param("../x", "'../x' leaves the tenant's storage", id="parent-directory"),
        pytest.param("/etc/x", "'/etc/x' is an absolute path", id="absolute-path"),
        pytest.param("s3://other-bucket/x", "is a URI", id="uri"),
    ],
)
def test_data_upload_refuses_paths_outside_the_tenants_storage(
    deployment: Path, path: str, problem: str
) -> None:
    local = deployment / "digits"
    local.mkdir()
    (local / "train.csv").write_text("pixel0,label\n0,1\n")

    result = invoke("data", "upload", str(local), path, "--tenant", "acme")

    assert result.exit_code == 2, result.output
    assert problem in text_of(result)
    assert not (deployment / "storage").exists(), "nothing is written anywhere"


def test_data_upload_to_an_unknown_tenant_lists_the_known_ones(deployment: Path) -> None:
    local = deployment / "digits"
    local.mkdir()
    (local / "train.csv").write_text("pixel0,label\n0,1\n")

    result = invoke("data", "upload", str(local), "datasets/digits", "--tenant", "initech")

    assert result.exit_code == 2, result.output
    assert "unknown tenant 'initech': known tenants are acme, globex" in text_of(result)


@pytest.mark.parametrize(
    ("job_id", "message"),
    [
        pytest.param(
            "acme.digits-mlp.20261124-215908-abcd",
            "acme.digits-mlp.20261124-215908-abcd has no committed model yet (state: unknown)",
            id="unknown-job",
        ),
        pytest.param("not-a-job", "'not-a-job' is not a Trainyard job id", id="malformed-id"),
        pytest.param(
            "initech.digits-mlp.20261124-215908-abcd",
            "unknown tenant 'initech'",
            id="unknown-tenant",
        ),
    ],
)
def test_download_of_an_unknown_job_fails_readably(
    deployment: Path, job_id: str, message: str
) -> None:
    dest = deployment / "model"

    result = invoke("download", job_id, str(dest))

    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    assert message in text_of(result)
    assert "Traceback" not in result.output
    assert not dest.exists()
