"""The model registry on both backends: the evaluation gate, manual promotion, and racing runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from trainyard.jobs.checkpoints import publish_directory
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.lineage import Lineage
from trainyard.jobs.registry import ModelRegistry, ModelVersion, parse_version
from trainyard.manifest.schema import EvaluationSpec
from trainyard.storage import ObjectStore

JOB = "digits-mlp"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


def spec(**fields: Any) -> EvaluationSpec:
    return EvaluationSpec(**{"command": "python evaluate.py", "metric": "accuracy", **fields})


def lineage(job_id: str) -> Lineage:
    return Lineage(
        job_id=job_id,
        airflow_run_id=f"run-{job_id}",
        manifest={"name": JOB},
        code_digest="sha256:code",
        data_digest="sha256:data",
        framework="pytorch 2.13",
        parent_checkpoint=7,
        timings={"training": 1.5},
    )


@pytest.fixture
def publish(store: ObjectStore, tmp_path: Path) -> Callable[[str], str]:
    """Publish results for a job id as the learner runtime does; return their prefix."""

    def publish_results(job_id: str) -> str:
        local = tmp_path / job_id
        (local / "nested").mkdir(parents=True, exist_ok=True)
        (local / "model.bin").write_bytes(job_id.encode())
        (local / "nested" / "config.json").write_text("{}")
        prefix = JobLayout(job_id).results
        publish_directory(store, local, prefix)
        store.put_json(JobLayout(job_id).evaluation, {"metrics": {}})
        return prefix

    return publish_results


def run(
    registry: ModelRegistry,
    publish: Callable[[str], str],
    job_id: str,
    value: float,
    evaluation: EvaluationSpec,
) -> ModelVersion:
    """One successful run of the job: register its model, then the gate decides."""
    metrics = {evaluation.metric: value, "epochs": 3}
    version = registry.register(
        job_id, publish(job_id), metrics, evaluation.metric, lineage(job_id)
    )
    assert version.status == "registered"
    return registry.decide(version, evaluation)


def test_first_version_is_promoted_with_its_files_and_lineage(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    assert registry.production() is None
    assert registry.versions() == []

    first = run(registry, publish, "acme.digits-mlp.a", 0.93, spec())

    assert (first.version, first.status) == (1, "promoted")
    assert first.reason == "first version of the job (accuracy 0.93)"
    assert (first.value, first.metrics) == (0.93, {"accuracy": 0.93, "epochs": 3})
    assert first.lineage == lineage("acme.digits-mlp.a")
    assert registry.production() == first
    pointer = store.get_json(f"models/{JOB}/production")
    assert (pointer["version"], pointer["value"], pointer["manual"]) == (1, 0.93, False)
    model = registry.model_prefix(1)
    assert model == f"models/{JOB}/v1/model"
    assert [info.key for info in store.list(f"models/{JOB}/v1")] == [
        f"{model}/_MANIFEST.json",
        f"{model}/model.bin",
        f"{model}/nested/config.json",
        f"models/{JOB}/v1/version.json",
    ]
    assert store.get_bytes(f"{model}/model.bin") == b"acme.digits-mlp.a"


def test_a_worse_version_is_rejected_with_the_reason_and_production_stays(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    best = run(registry, publish, "j1", 0.957, spec())
    pointer = store.get_bytes(registry.pointer_key)

    worse = run(registry, publish, "j2", 0.912, spec())
    equal = run(registry, publish, "j3", 0.957, spec())

    assert (worse.version, worse.status) == (2, "rejected")
    assert worse.reason == "accuracy 0.912 is not better than production v1 (0.957)"
    assert equal.status == "rejected", "only a better model is promoted"
    assert store.get_bytes(registry.pointer_key) == pointer
    assert registry.production() == best
    assert [v.status for v in registry.versions()] == ["promoted", "rejected", "rejected"]

    better = run(registry, publish, "j4", 0.97, spec())
    assert (better.status, better.reason) == (
        "promoted",
        "better than production v1 (0.957 -> 0.97)",
    )
    assert registry.production() == better


def test_lower_is_better(store: ObjectStore, publish: Callable[[str], str]) -> None:
    registry = ModelRegistry(store, JOB)
    loss = spec(metric="loss", higher_is_better=False)
    assert run(registry, publish, "j1", 0.5, loss).status == "promoted"
    higher = run(registry, publish, "j2", 0.6, loss)
    assert (higher.status, higher.reason) == (
        "rejected",
        "loss 0.6 is not better than production v1 (0.5)",
    )
    assert run(registry, publish, "j3", 0.4, loss).status == "promoted"
    assert registry.production_pointer() is not None
    assert registry.production_pointer().version == 3  # type: ignore[union-attr]


def test_min_improvement(store: ObjectStore, publish: Callable[[str], str]) -> None:
    registry = ModelRegistry(store, JOB)
    gate = spec(min_improvement=0.02)
    run(registry, publish, "j1", 0.93, gate)

    small = run(registry, publish, "j2", 0.94, gate)
    assert small.status == "rejected"
    assert small.reason == (
        "accuracy 0.94 improves on production v1 (0.93) by 0.01, "
        "less than the minimum improvement 0.02"
    )
    exact = run(registry, publish, "j3", 0.95, gate)  # 0.95 - 0.93 is a hair under 0.02
    assert (exact.status, exact.reason) == ("promoted", "better than production v1 (0.93 -> 0.95)")


def test_threshold(store: ObjectStore, publish: Callable[[str], str]) -> None:
    registry = ModelRegistry(store, JOB)
    low = run(registry, publish, "j1", 0.85, spec(threshold=0.9))
    assert (low.status, low.reason) == ("rejected", "accuracy 0.85 is below threshold 0.9")
    assert registry.production() is None, "a first version must pass the threshold too"
    assert run(registry, publish, "j2", 0.9, spec(threshold=0.9)).status == "promoted"

    loss = spec(metric="loss", threshold=0.3, higher_is_better=False)
    high = run(ModelRegistry(store, "other"), publish, "j3", 0.31, loss)
    assert high.reason == "loss 0.31 is above threshold 0.3"


@pytest.mark.parametrize("reported", [{}, {"accuracy": "n/a"}, {"accuracy": float("nan")}])
def test_a_missing_or_unusable_metric_is_rejected(
    store: ObjectStore, publish: Callable[[str], str], reported: dict[str, Any]
) -> None:
    registry = ModelRegistry(store, JOB)
    version = registry.register("j1", publish("j1"), reported, "accuracy", lineage("j1"))
    decided = registry.decide(version, spec())
    assert (decided.value, decided.status) == (None, "rejected")
    assert decided.reason == "the evaluation reported no numeric accuracy"
    assert registry.production() is None


def test_manual_promotion_is_recorded(store: ObjectStore, publish: Callable[[str], str]) -> None:
    registry = ModelRegistry(store, JOB)
    run(registry, publish, "j1", 0.95, spec())
    rejected = run(registry, publish, "j2", 0.90, spec())

    promoted = registry.promote(2, "rollback: v1 misbehaves in production")

    assert promoted.status == "promoted"
    assert promoted.reason == (
        "promoted manually: rollback: v1 misbehaves in production "
        f"(the gate had rejected it: {rejected.reason})"
    )
    pointer = registry.production_pointer()
    assert pointer is not None
    assert (pointer.version, pointer.value, pointer.manual) == (2, 0.90, True)
    assert pointer.reason == "rollback: v1 misbehaves in production"
    assert registry.get(2) == promoted
    # The gate now compares with the version people chose.
    assert run(registry, publish, "j3", 0.92, spec()).status == "promoted"


def test_without_evaluation_the_newest_version_is_production(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    first = registry.register("j1", publish("j1"), {}, "", lineage("j1"))
    second = registry.register("j2", publish("j2"), {}, "", lineage("j2"))

    assert registry.decide(second, None).status == "promoted"
    late = registry.decide(first, None)  # an older run finishing last must not win

    assert late.status == "rejected"
    assert "newer v2" in late.reason
    pointer = registry.production_pointer()
    assert pointer is not None
    assert (pointer.version, pointer.manual) == (2, False)


def test_unknown_versions_raise_lookup_errors_naming_job_and_version(
    store: ObjectStore,
) -> None:
    registry = ModelRegistry(store, JOB)
    for action in (lambda: registry.get(4), lambda: registry.promote(4, "why not")):
        with pytest.raises(LookupError, match=f"job '{JOB}' has no model version v4"):
            action()
    assert not store.exists(registry.pointer_key)


def test_register_is_idempotent_per_job_id(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    first = registry.register("j1", publish("j1"), {"accuracy": 0.9}, "accuracy", lineage("j1"))
    again = registry.register("j1", publish("j1"), {"accuracy": 0.9}, "accuracy", lineage("j1"))
    assert again == first
    assert [v.version for v in registry.versions()] == [1]


def test_decide_after_a_crash_between_pointer_and_record(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    decided = run(registry, publish, "j1", 0.9, spec())
    # The pointer was written but the crash lost the record's update.
    record = f"models/{JOB}/v1/version.json"
    store.put_bytes(
        record, decided.model_copy(update={"status": "registered"}).model_dump_json().encode()
    )

    assert registry.decide(1, spec()) == decided
    assert registry.decide(1, spec()) == decided, "a decided version stays decided"


@pytest.mark.parametrize(("text", "number"), [("3", 3), ("v3", 3), (" v12 ", 12)])
def test_parse_version(text: str, number: int) -> None:
    assert parse_version(text) == number


@pytest.mark.parametrize("text", ["", "v", "0", "v0", "-1", "3.0", "latest"])
def test_parse_version_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="invalid model version"):
        parse_version(text)


@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_job_names_cannot_leave_the_models_folder(store: ObjectStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        ModelRegistry(store, name)


# Racing runs


def race(workers: list[Callable[[], Any]]) -> None:
    """Start every worker at the same moment; re-raise the first failure."""
    barrier = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def start(work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=start, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_racing_runs_leave_the_pointer_on_the_best_model(
    store: ObjectStore, publish: Callable[[str], str], higher_is_better: bool
) -> None:
    evaluation = spec(higher_is_better=higher_is_better)
    for round_ in range(3):
        registry = ModelRegistry(store, f"race-{round_}")
        values = [0.91, 0.97, 0.93, 0.95][: 3 + round_ % 2]
        race(
            [
                partial(run, registry, publish, f"race-{round_}.j{n}", value, evaluation)
                for n, value in enumerate(values)
            ]
        )

        best = max(values) if higher_is_better else min(values)
        pointer = json.loads(store.get_bytes(registry.pointer_key))  # whole, valid JSON
        assert pointer["value"] == best
        production = registry.production()
        assert production is not None
        assert (production.value, production.status) == (best, "promoted")
        versions = registry.versions()
        assert sorted(v.version for v in versions) == list(range(1, len(values) + 1))
        assert {v.status for v in versions} <= {"promoted", "rejected"}, "every run decided"
        assert sorted(v.value for v in versions if v.value is not None) == sorted(values)


def test_concurrent_registrations_get_unique_version_numbers(
    store: ObjectStore, publish: Callable[[str], str]
) -> None:
    registry = ModelRegistry(store, JOB)
    prefixes = {f"j{n}": publish(f"j{n}") for n in range(6)}
    claimed: dict[str, int] = {}

    def register(job_id: str) -> None:
        version = registry.register(job_id, prefixes[job_id], {}, "accuracy", lineage(job_id))
        claimed[job_id] = version.version

    race([partial(register, job_id) for job_id in prefixes])

    assert sorted(claimed.values()) == list(range(1, 7))
    assert {v.job_id: v.version for v in registry.versions()} == claimed
    for job_id, number in claimed.items():
        model = store.get_bytes(f"{registry.model_prefix(number)}/model.bin")
        assert model == job_id.encode()
