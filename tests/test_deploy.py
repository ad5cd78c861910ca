"""The Kubernetes objects of deploy/: each validates against the Kubernetes OpenAPI schema, and
the learner namespace's Role grants what the learner tasks call (and nothing on Secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devkit.airflow_env import REPO_ROOT
from tests.support.kube_server import KUBERNETES_VERSION

MANIFESTS = sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def objects(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_object_validates_against_the_kubernetes_schema(path: Path) -> None:
    assert objects(path)
    for document in objects(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_role_grants_what_the_learner_tasks_call_and_no_secret() -> None:
    documents = objects(REPO_ROOT / "deploy" / "kubernetes" / "learner-namespace.yaml")
    [role] = [document for document in documents if document["kind"] == "Role"]
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The worker: create, reattach (list by labels), wait (get), patch the provider's
    # "already checked" label, follow logs, list events, delete; the rendezvous Service.
    needed = {
        *(("pods", verb) for verb in ("create", "get", "list", "patch", "delete")),
        ("pods/log", "get"),
        ("events", "list"),
        *(("services", verb) for verb in ("create", "get", "delete")),
    }
    assert needed <= granted
    assert not any(resource == "secrets" for resource, _ in granted)
    [binding] = [document for document in documents if document["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {subject["name"] for subject in binding["subjects"]} == {
        "trainyard-worker",
        "trainyard-triggerer",
    }
