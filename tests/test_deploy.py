"""The deployment files of deploy/: each Kubernetes object validates against the Kubernetes
OpenAPI schema; the learner namespace's Role grants what the learner tasks call (and nothing on
Secrets); the Helm values use only keys the pinned Airflow chart defines, and agree with the
RBAC, the image and the deployment config they name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from devkit.airflow_env import REPO_ROOT
from devkit.kube_server import KUBERNETES_VERSION
from tests.test_compose import in_repo
from trainyard.storage.config import S3StorageConfig
from trainyard.tenancy.config import load_config

DEPLOY = REPO_ROOT / "deploy"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
#: The official Apache Airflow Helm chart version the values are written for.
CHART_VERSION = "1.22.0"
CHART_SCHEMA = DEPLOY / "helm" / f"airflow-chart-{CHART_VERSION}.values.schema.extract.json"
MANIFESTS = sorted(path for path in DEPLOY.rglob("*.yaml") if path != HELM_VALUES)
LEARNER_NAMESPACE = DEPLOY / "kubernetes" / "learner-namespace.yaml"


def objects(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def load_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(HELM_VALUES.read_text())
    return values


def chart_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(CHART_SCHEMA.read_text())
    return schema


def undefined_keys(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of `values` that `schema` does not declare (where it lists its properties and
    takes no other keys by a schema of their own), as dotted paths."""
    if not isinstance(values, dict) or "properties" not in schema:
        return []
    extra = schema.get("additionalProperties")
    found = []
    for key, value in values.items():
        where = f"{path}{key}"
        if key in schema["properties"]:
            found += undefined_keys(value, schema["properties"][key], f"{where}.")
        elif isinstance(extra, dict):
            found += undefined_keys(value, extra, f"{where}.")
        else:
            found.append(where)
    return found


def chart_problems(values: dict[str, Any]) -> list[str]:
    """What the pinned chart's schema rejects, and keys it does not define."""
    validator = jsonschema.Draft7Validator(chart_schema())
    problems = [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(values)
    ]
    return problems + [
        f"{key}: not a key of chart {CHART_VERSION}"
        for key in undefined_keys(values, chart_schema())
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_object_validates_against_the_kubernetes_schema(path: Path) -> None:
    assert objects(path)
    for document in objects(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_role_grants_what_the_learner_tasks_call_and_no_secret() -> None:
    documents = objects(LEARNER_NAMESPACE)
    [role] = [document for document in documents if document["kind"] == "Role"]
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The worker: create, reattach (list by labels), wait (get, watch events), patch the
    # provider's "already checked" label, follow logs, list events, delete; the rendezvous
    # Service. The triggerer, deferred: get and delete pods, delete the Service.
    needed = {
        *(("pods", verb) for verb in ("create", "get", "list", "watch", "patch", "delete")),
        ("pods/log", "get"),
        *(("events", verb) for verb in ("list", "watch")),
        *(("services", verb) for verb in ("create", "get", "delete")),
    }
    assert needed <= granted
    # No exec (the learners push no XCom through a sidecar), and no Secret: pods reference it.
    assert not any(resource in ("secrets", "pods/exec") for resource, _ in granted)
    [binding] = [document for document in documents if document["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {subject["name"] for subject in binding["subjects"]} == {
        "trainyard-worker",
        "trainyard-triggerer",
    }


def test_the_helm_values_use_only_what_the_pinned_chart_defines() -> None:
    assert chart_problems(load_values()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # The chart's own schema: its sections take no unknown key.
        (
            lambda values: values["triggerer"].update(enable=True),
            "triggerer: Additional properties are not allowed ('enable' was unexpected)",
        ),
        (lambda values: values.update(executor="Celery"), "executor: 'Celery' does not match"),
        # Its root takes any key (Helm would ignore a misspelt section): refused here.
        (
            lambda values: values.update(triggerrer=values.pop("triggerer")),
            f"triggerrer: not a key of chart {CHART_VERSION}",
        ),
    ],
    ids=["unknown-nested-key", "wrong-value", "unknown-top-level-key"],
)
def test_values_the_chart_does_not_define_are_refused(change: Any, problem: str) -> None:
    values = copy.deepcopy(load_values())
    change(values)
    problems = chart_problems(values)
    assert any(found.startswith(problem) for found in problems), problems


def test_the_helm_service_accounts_are_the_ones_the_learner_namespaces_bind() -> None:
    values = load_values()
    [binding] = [doc for doc in objects(LEARNER_NAMESPACE) if doc["kind"] == "RoleBinding"]
    bound = {subject["name"] for subject in binding["subjects"]}
    accounts = {
        values["workers"]["celery"]["serviceAccount"]["name"],
        values["triggerer"]["serviceAccount"]["name"],
    }
    assert accounts == bound
    assert values["triggerer"]["enabled"]  # deferred learner tasks need it
    assert values["executor"] == "CeleryExecutor"


def test_the_helm_deployment_runs_the_images_dags_plugin_policy_and_kubernetes_config() -> None:
    values = load_values()
    core = values["config"]["core"]
    assert in_repo(core["dags_folder"]) == REPO_ROOT / "dags"
    assert in_repo(core["plugins_folder"]).joinpath("trainyard_plugin.py").is_file()
    assert not values["dags"]["persistence"]["enabled"]
    assert not values["dags"]["gitSync"]["enabled"]
    # The chart would mount its own (empty) airflow_local_settings.py over the image's policy.
    assert values["airflowLocalSettings"] is None
    env = {var["name"]: var["value"] for var in values["env"]}
    config_path = in_repo(env["TRAINYARD_CONFIG"])
    assert config_path == REPO_ROOT / "config" / "kubernetes.yaml"
    config = load_config(config_path)
    assert config.kubernetes is not None
    assert config.kubernetes.in_cluster
    assert {config.learner_backend_of(tenant.name) for tenant in config.tenants} == {"kubernetes"}
    # Each tenant's storage keys reach the Airflow containers from the Secret.
    secret_env = {entry["envName"] for entry in values["secret"]}
    for tenant in config.tenants:
        assert isinstance(tenant.storage, S3StorageConfig)  # pods cannot reach local storage
        prefix = tenant.storage.credentials_env
        assert {f"{prefix}_ACCESS_KEY", f"{prefix}_SECRET_KEY"} <= secret_env
    assert "trainyard tenants sync" in values["migrateDatabaseJob"]["args"][-1]
