"""The deployment config: default file, path resolution, tenants, and errors naming the field."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import path_without
from trainyard.failures import ResourceError
from trainyard.manifest.schema import FrameworkName, ManifestError, parse_manifest
from trainyard.runtime.sandbox import UNSANDBOXED, SandboxNetwork
from trainyard.storage.config import LocalStorageConfig, S3StorageConfig
from trainyard.tenancy.config import (
    CONFIG_ENV,
    ConfigError,
    TrainyardConfig,
    UnknownTenantError,
    check_manifest_for_tenant,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def tenant(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "storage": {"kind": "local", "root": f"storage/{name}"}, **fields}


def s3_tenant(name: str, **fields: Any) -> dict[str, Any]:
    storage = {"kind": "s3", "endpoint": "minio:9000", "bucket": name}
    return {"name": name, "storage": storage, **fields}


def write_config(directory: Path, document: Any) -> Path:
    path = directory / "trainyard.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def manifest_for(tenant_name: str, framework: str = "pytorch"):
    return parse_manifest(
        {
            "name": "digits-mlp",
            "tenant": tenant_name,
            "framework": {"name": framework, "version": "1", "image": "registry.example/x:1"},
            "code": {"path": "."},
            "command": "python train.py",
        }
    )


def test_default_config_has_two_local_tenants(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    config = load_config()

    assert config.learner_backend == "local"
    assert config.work_dir == REPO / ".demo" / "work"
    assert config.tenant_names == ["acme", "globex"]
    for name in config.tenant_names:
        storage = config.tenant(name).storage
        assert isinstance(storage, LocalStorageConfig)
        assert storage.root == REPO / ".demo" / "storage" / name
        assert config.tenant(name).allowed_frameworks == list(FrameworkName)
        assert config.tenant(name).default_watchdog == 30 * 60


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        pytest.param({}, 1800.0, id="default-half-an-hour"),
        pytest.param({"default_watchdog": "10m"}, 600.0, id="minutes"),
        pytest.param({"default_watchdog": "90s"}, 90.0, id="seconds-with-unit"),
        pytest.param({"default_watchdog": 45}, 45.0, id="plain-seconds"),
    ],
)
def test_tenant_default_watchdog(tmp_path, fields, seconds):
    path = write_config(tmp_path, {"work_dir": "w", "tenants": [tenant("acme", **fields)]})

    assert load_config(path).tenant("acme").default_watchdog == seconds


def test_config_path_from_environment(monkeypatch, tmp_path):
    path = write_config(tmp_path, {"work_dir": "w", "tenants": [tenant("initech")]})
    monkeypatch.setenv(CONFIG_ENV, str(path))

    assert load_config().tenant_names == ["initech"]


def test_relative_paths_resolve_against_the_config_file(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config(
        tmp_path,
        {
            "work_dir": "../scratch",
            "tenants": [
                tenant("acme"),
                {"name": "globex", "storage": {"kind": "local", "root": "~/globex"}},
                {"name": "umbrella", "storage": {"kind": "local", "root": "/srv/umbrella"}},
            ],
        },
    )

    config = load_config(path)

    assert config.work_dir == tmp_path.parent / "scratch"
    roots = [t.storage.root for t in config.tenants if isinstance(t.storage, LocalStorageConfig)]
    assert roots == [
        tmp_path / "storage" / "acme",
        tmp_path / "home" / "globex",
        Path("/srv/umbrella"),
    ]


def test_s3_tenant(tmp_path):
    s3 = {"kind": "s3", "endpoint": "minio:9000", "bucket": "globex", "prefix": "trainyard"}
    path = write_config(tmp_path, {"work_dir": "w", "tenants": [{"name": "globex", "storage": s3}]})

    storage = load_config(path).tenant("globex").storage

    assert storage == S3StorageConfig(endpoint="minio:9000", bucket="globex", prefix="trainyard")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme"), tenant("globex"), tenant("acme")]},
            "tenants: duplicate tenant names: acme; names must be unique",
            id="duplicate-tenant-names",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": []},
            "tenants: List should have at least 1 item",
            id="no-tenants",
        ),
        pytest.param(
            {"tenants": [tenant("acme")]},
            "work_dir: required field is missing",
            id="missing-work-dir",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme")], "executor": "celery"},
            "executor: field is not allowed here; "
            "allowed fields: learner_backend, work_dir, stop_grace_seconds, jobs_dir, tenants",
            id="unknown-top-level-field",
        ),
        pytest.param(
            {"work_dir": "w", "learner_backend": "slurm", "tenants": [tenant("acme")]},
            "learner_backend: Input should be 'local', 'kubernetes' or 'bare' (got 'slurm')",
            id="unknown-backend",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", learner_backend="slurm")]},
            "tenants.0.learner_backend: Input should be 'local', 'kubernetes' or 'bare' "
            "(got 'slurm')",
            id="unknown-tenant-backend",
        ),
        pytest.param(
            {"work_dir": "w", "learner_backend": "kubernetes", "tenants": [s3_tenant("acme")]},
            "kubernetes: required: the learners of acme run on Kubernetes",
            id="kubernetes-backend-without-cluster",
        ),
        pytest.param(
            {
                "work_dir": "w",
                "tenants": [s3_tenant("acme"), tenant("globex", learner_backend="kubernetes")],
                "kubernetes": {},
            },
            "kubernetes: tenant 'globex' runs learners on Kubernetes, where pods cannot reach its "
            "local storage directory: give it s3 storage",
            id="kubernetes-tenant-with-local-storage",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme")], "kubernetes": {"cluster": "prod"}},
            "kubernetes.cluster: field is not allowed here; allowed fields: images, "
            "gpu_node_selectors, gpu_tolerations, startup_timeout_seconds, rendezvous_port, "
            "in_cluster, config_file",
            id="unknown-kubernetes-field",
        ),
        pytest.param(
            {
                "work_dir": "w",
                "tenants": [tenant("acme")],
                "kubernetes": {"images": {"torch:2.13": "registry.example/pytorch:2.13"}},
            },
            "kubernetes.images: invalid key 'torch:2.13': use <framework>:<version> with "
            "framework pytorch, tensorflow, jax, such as pytorch:2.13",
            id="image-key-of-unknown-framework",
        ),
        pytest.param(
            {
                "work_dir": "w",
                "tenants": [tenant("acme")],
                "kubernetes": {"gpu_tolerations": [{"key": "gpu", "effect": "NoRun"}]},
            },
            "kubernetes.gpu_tolerations.0.effect: Input should be 'NoSchedule', "
            "'PreferNoSchedule' or 'NoExecute'",
            id="bad-toleration-effect",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme")], "kubernetes": {"config_file": "kube"}},
            "kubernetes.config_file: set in_cluster: false to use a kubeconfig file instead",
            id="kubeconfig-while-in-cluster",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", namespace="Team_A")]},
            "tenants.0.namespace: String should match pattern",
            id="namespace-not-a-dns-label",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("Acme")]},
            "tenants.0.name: invalid name 'Acme': use a lowercase DNS label",
            id="bad-tenant-name",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", quota=4)]},
            "tenants.0.quota: field is not allowed here; allowed fields: name, display_name, "
            "storage, allowed_frameworks, max_running_jobs",
            id="unknown-tenant-field",
        ),
        pytest.param(
            {
                "work_dir": "w",
                "tenants": [
                    tenant("acme") | {"storage": {"kind": "local", "root": "s", "bucket": "b"}}
                ],
            },
            "tenants.0.storage.bucket: field is not allowed here; allowed fields: kind, root",
            id="unknown-storage-field",
        ),
        pytest.param(
            {
                "work_dir": "w",
                "tenants": [tenant("acme") | {"storage": {"kind": "s3", "bucket": "b"}}],
            },
            "tenants.0.storage.endpoint: required field is missing",
            id="s3-storage-without-endpoint",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme") | {"storage": {"kind": "gcs"}}]},
            "tenants.0.storage: Input tag 'gcs' found using 'kind' does not match any of the "
            "expected tags: 'local', 's3'",
            id="unknown-storage-kind",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", allowed_frameworks=["pytorch", "caffe"])]},
            "tenants.0.allowed_frameworks.1: "
            "Input should be 'pytorch', 'tensorflow', 'jax' or 'custom'",
            id="unknown-framework",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", max_running_jobs=0)]},
            "tenants.0.max_running_jobs: Input should be greater than or equal to 1",
            id="no-running-jobs",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", default_watchdog="half an hour")]},
            "tenants.0.default_watchdog: invalid duration 'half an hour': use seconds such as 90",
            id="bad-default-watchdog",
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", default_watchdog=0)]},
            "tenants.0.default_watchdog: Input should be greater than 0",
            id="zero-default-watchdog",
        ),
        pytest.param("work_dir: w\n tenants: []\n", "invalid YAML", id="yaml-syntax-error"),
        pytest.param(
            "- work_dir: w\n", "must be a mapping of fields", id="list-instead-of-mapping"
        ),
        pytest.param(
            {"work_dir": "w", "tenants": [tenant("acme", default_watchdog=10**400)]},
            "tenants.0.default_watchdog: the number is too large",
            id="huge-number",
        ),
        pytest.param("a: &a [1]\n" + "b: *a\n" * 17, "YAML aliases", id="alias-bomb"),
        pytest.param(
            "work_dir: [[[[[[[[[[[[[[[[[[w]]]]]]]]]]]]]]]]]]\n", "nests deeper", id="deep"
        ),
    ],
)
def test_bad_config_names_file_and_field(tmp_path, document, expected):
    path = write_config(tmp_path, document)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "trainyard.yaml"
    path.write_bytes(b"work_dir: \xff\n")

    with pytest.raises(ConfigError, match=f"{path} is not UTF-8 text"):
        load_config(path)


def test_missing_config_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'absent.yaml'}.*point {CONFIG_ENV} at"):
        load_config(tmp_path / "absent.yaml")


def test_unknown_tenant_lists_known_ones():
    config = TrainyardConfig.model_validate(
        {"work_dir": "w", "tenants": [tenant("acme"), tenant("globex")]}
    )

    with pytest.raises(KeyError) as caught:
        config.tenant("initech")

    assert isinstance(caught.value, UnknownTenantError)
    assert str(caught.value) == "unknown tenant 'initech': known tenants are acme, globex"


def test_manifest_checked_against_its_tenant():
    config = TrainyardConfig.model_validate(
        {"work_dir": "w", "tenants": [tenant("acme"), tenant("globex", allowed_frameworks=["jax"])]}
    )

    assert check_manifest_for_tenant(manifest_for("acme", "custom"), config).name == "acme"
    assert check_manifest_for_tenant(manifest_for("globex", "jax"), config).name == "globex"


@pytest.mark.parametrize(
    ("tenant_name", "framework", "field", "hint"),
    [
        pytest.param(
            "initech",
            "pytorch",
            "tenant",
            "unknown tenant 'initech': known tenants are acme, globex",
            id="unknown-tenant",
        ),
        pytest.param(
            "globex",
            "pytorch",
            "framework.name",
            "framework 'pytorch' is not allowed for tenant 'globex': use one of jax, tensorflow",
            id="framework-not-allowed",
        ),
    ],
)
def test_manifest_rejected_for_its_tenant(tenant_name, framework, field, hint):
    config = TrainyardConfig.model_validate(
        {
            "work_dir": "w",
            "tenants": [tenant("acme"), tenant("globex", allowed_frameworks=["jax", "tensorflow"])],
        }
    )

    with pytest.raises(ManifestError) as caught:
        check_manifest_for_tenant(manifest_for(tenant_name, framework), config)

    assert caught.value.problems == [(field, hint)]


def test_kubernetes_defaults(tmp_path):
    path = write_config(
        tmp_path,
        {"work_dir": "w", "learner_backend": "kubernetes", "tenants": [s3_tenant("acme")]}
        | {"kubernetes": {"images": {"pytorch:2.13": "registry.example/pytorch:2.13"}}},
    )

    config = load_config(path)

    kubernetes = config.kubernetes
    assert kubernetes is not None
    assert kubernetes.images == {"pytorch:2.13": "registry.example/pytorch:2.13"}
    assert kubernetes.gpu_node_selectors == {}
    assert [t.model_dump() for t in kubernetes.gpu_tolerations] == [
        {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "value": None,
            "effect": "NoSchedule",
            "toleration_seconds": None,
        }
    ]
    assert kubernetes.startup_timeout_seconds == 600
    assert config.stop_grace_seconds == 30
    assert kubernetes.in_cluster is True
    assert kubernetes.config_file is None
    acme = config.tenant("acme")
    assert (acme.namespace, acme.service_account, acme.storage_secret) == (
        "trainyard-acme",
        "trainyard-learner",
        "trainyard-storage",
    )


def test_kubernetes_settings_of_a_tenant_and_the_cluster(tmp_path):
    cluster = {
        "gpu_node_selectors": {"a100": {"cloud.example.com/gpu": "a100"}},
        "gpu_tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes"}],
        "in_cluster": False,
        "config_file": "kube/config",
        "startup_timeout_seconds": 900,
    }
    acme = s3_tenant("acme", namespace="ml-acme", service_account="acme-sa", storage_secret="s3")
    path = write_config(
        tmp_path,
        {"work_dir": "w", "tenants": [acme], "kubernetes": cluster, "stop_grace_seconds": 120},
    )

    config = load_config(path)

    assert config.kubernetes is not None
    assert config.kubernetes.config_file == tmp_path / "kube" / "config"
    assert config.kubernetes.gpu_node_selectors == {"a100": {"cloud.example.com/gpu": "a100"}}
    assert config.kubernetes.gpu_tolerations[0].value == "yes"
    assert (config.kubernetes.startup_timeout_seconds, config.stop_grace_seconds) == (900, 120)
    tenant_config = config.tenant("acme")
    assert (tenant_config.namespace, tenant_config.service_account) == ("ml-acme", "acme-sa")
    assert tenant_config.storage_secret == "s3"


@pytest.mark.parametrize(
    ("deployment", "overrides", "expected"),
    [
        pytest.param("local", {}, {"acme": "local", "globex": "local"}, id="all-local"),
        pytest.param(
            "local",
            {"globex": "kubernetes"},
            {"acme": "local", "globex": "kubernetes"},
            id="one-tenant-on-kubernetes",
        ),
        pytest.param(
            "kubernetes",
            {"acme": "local"},
            {"acme": "local", "globex": "kubernetes"},
            id="one-tenant-stays-local",
        ),
    ],
)
def test_learner_backend_per_tenant(tmp_path, deployment, overrides, expected):
    tenants = [
        s3_tenant(name, **({"learner_backend": overrides[name]} if name in overrides else {}))
        for name in ("acme", "globex")
    ]
    document = {"work_dir": "w", "learner_backend": deployment, "tenants": tenants}
    config = load_config(write_config(tmp_path, document | {"kubernetes": {}}))

    assert {name: config.learner_backend_of(name) for name in expected} == expected


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without bubblewrap: this process's PATH without bwrap."""
    monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))


def sandbox_config(
    tmp_path: Path, sandbox: dict[str, Any], tenant_network: str | None = None
) -> TrainyardConfig:
    fields = {"sandbox": {"network": tenant_network}} if tenant_network else {}
    document = {"work_dir": "w", "sandbox": sandbox, "tenants": [tenant("acme", **fields)]}
    return load_config(write_config(tmp_path, document))


@pytest.mark.parametrize(
    ("sandbox", "tenant_network", "expected"),
    [
        pytest.param({}, None, SandboxNetwork.STORAGE, id="auto"),
        pytest.param({"enabled": True}, None, SandboxNetwork.STORAGE, id="on"),
        pytest.param({"enabled": False}, None, None, id="off"),
        pytest.param({"network": "none"}, None, SandboxNetwork.NONE, id="deployment"),
        pytest.param({"network": "none"}, "all", SandboxNetwork.ALL, id="tenant-wins"),
    ],
)
def test_sandbox_network_of_a_tenant(
    tmp_path: Path, sandbox: dict[str, Any], tenant_network: str | None, expected: Any
) -> None:
    assert shutil.which("bwrap"), "make services installs bubblewrap"

    config = sandbox_config(tmp_path, sandbox, tenant_network)

    assert config.sandbox_network_of("acme") == expected
    assert config.sandbox_warning() == (UNSANDBOXED if expected is None else None)


@pytest.mark.parametrize(
    "sandbox",
    [
        pytest.param({}, id="auto"),
        pytest.param({"enabled": "auto"}, id="auto-said"),
        {"enabled": True},
    ],
)
@pytest.mark.usefixtures("no_bwrap")
def test_without_bwrap_a_sandboxed_deployment_refuses_the_job_naming_the_fix(
    tmp_path: Path, sandbox: dict[str, Any]
) -> None:
    config = sandbox_config(tmp_path, sandbox)

    with pytest.raises(ResourceError, match="bubblewrap") as refused:
        config.sandbox_network_of("acme")

    assert "sandbox.enabled" in refused.value.cause
    assert "apt-get install bubblewrap" in refused.value.fix
    assert "sandbox.enabled: false" in refused.value.fix
    warning = config.sandbox_warning()
    assert warning is not None
    assert "refused at validate" in warning
    assert "apt-get install bubblewrap" in warning


@pytest.mark.usefixtures("no_bwrap")
def test_without_bwrap_only_an_explicit_false_runs_unsandboxed(tmp_path: Path) -> None:
    config = sandbox_config(tmp_path, {"enabled": False})

    assert config.sandbox_network_of("acme") is None
    assert config.sandbox_warning() == UNSANDBOXED


@pytest.mark.usefixtures("no_bwrap")
def test_learners_in_pods_are_no_reason_to_warn(tmp_path: Path) -> None:
    """A Kubernetes tenant's pod is its learners' sandbox: no bwrap needed here."""
    document = {
        "work_dir": "w",
        "learner_backend": "kubernetes",
        "kubernetes": {},
        "tenants": [s3_tenant("acme")],
    }
    config = load_config(write_config(tmp_path, document))

    assert config.sandbox_warning() is None


def test_an_unknown_sandbox_network_is_refused_naming_the_field(tmp_path: Path) -> None:
    document = {"work_dir": "w", "sandbox": {"network": "lan"}, "tenants": [tenant("acme")]}
    with pytest.raises(ConfigError, match=r"sandbox.network.*'none', 'storage' or 'all'"):
        load_config(write_config(tmp_path, document))
