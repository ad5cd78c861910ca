"""The commit of a job's model: the published results, verified, and only the current attempt's."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.failures import PlatformFault, UserError
from trainyard.jobs.checkpoints import publish_directory
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.model import commit_model
from trainyard.storage.local import LocalStore

LAYOUT = JobLayout("acme.digits-mlp.20261124-215908-abcd")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "storage")


def publish(store: LocalStore, tmp_path: Path, attempt: int) -> None:
    results = tmp_path / f"results-{attempt}"
    results.mkdir()
    (results / "model.pt").write_bytes(b"weights" * 100)
    publish_directory(store, results, LAYOUT.results, attempt=attempt)


def test_the_current_attempts_results_are_the_model(store: LocalStore, tmp_path: Path) -> None:
    publish(store, tmp_path, attempt=3)

    model = commit_model(store, LAYOUT, current_attempt=3)

    assert model.key == LAYOUT.results
    assert model.files["model.pt"]["size"] == 700


def test_results_of_a_superseded_attempt_are_not_committed(
    store: LocalStore, tmp_path: Path
) -> None:
    publish(store, tmp_path, attempt=2)  # its orphan published after the retry started

    with pytest.raises(PlatformFault, match=r"published by attempt 2, not .* current attempt 3"):
        commit_model(store, LAYOUT, current_attempt=3)


def test_missing_or_incomplete_results_are_platform_faults(
    store: LocalStore, tmp_path: Path
) -> None:
    with pytest.raises(PlatformFault, match="published no results manifest"):
        commit_model(store, LAYOUT, current_attempt=1)
    publish(store, tmp_path, attempt=1)
    store.put_bytes(f"{LAYOUT.results}/model.pt", b"cut short")

    with pytest.raises(PlatformFault, match=r"'model\.pt' is missing or incomplete"):
        commit_model(store, LAYOUT, current_attempt=1)


def test_no_saved_model_is_a_user_error(store: LocalStore, tmp_path: Path) -> None:
    store.put_json(LAYOUT.results_manifest, {"attempt": 1, "files": {}})

    with pytest.raises(UserError, match="saved no files in TRAINYARD_RESULT_DIR"):
        commit_model(store, LAYOUT, current_attempt=1)
