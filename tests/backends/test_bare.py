"""The bare backend (for tests): the runtime as a plain child of the task, judged as any other."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.backends import LearnerEnd, LearnerExit, RunMode, backend_for
from trainyard.backends.bare import BareProcessBackend
from trainyard.failures import ResourceError, UserError
from trainyard.jobs.attempts import judge_attempt
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.submission import example_manifest
from trainyard.storage import join_key
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TrainyardConfig

JOB_ID = "acme.tiny.20261124-215908-abcd"
TRAIN = """\
import os

with open(os.path.join(os.environ["TRAINYARD_RESULT_DIR"], "model.txt"), "w") as f:
    f.write("weights")
print("trained", flush=True)
"""


def bare_backend(tmp_path: Path) -> BareProcessBackend:
    config = TrainyardConfig.model_validate(
        {
            "work_dir": str(tmp_path / "work"),
            "learner_backend": "bare",
            "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(tmp_path)}}],
        }
    )
    backend = backend_for(config, "acme")
    assert isinstance(backend, BareProcessBackend)
    return backend


@pytest.mark.parametrize(
    ("script", "expected"),
    [pytest.param(TRAIN, None, id="success"), pytest.param("1 / 0\n", UserError, id="user-error")],
)
def test_a_learner_runs_to_its_outcome(
    tmp_path: Path, script: str, expected: type[UserError] | None
) -> None:
    store = LocalStore(tmp_path)
    layout = JobLayout(JOB_ID)
    store.put_bytes(join_key(layout.code, "main.py"), script.encode())
    backend = bare_backend(tmp_path)
    manifest = parse_manifest(example_manifest("acme") | {"command": "python main.py"})
    spec = backend.learner_spec(
        manifest,
        job_id=JOB_ID,
        mode=RunMode.TRAIN,
        attempt=1,
        credentials=None,
        on_output=print,
    )
    lines: list[str] = []

    exits = backend.run(spec, on_output=lines.append)

    failure = judge_attempt(store, spec, [LearnerEnd(0, exits[0])])
    if expected is None:
        assert exits == [LearnerExit(0)], "\n".join(lines)
        assert failure is None
        assert "trained" in lines
        assert store.get_bytes(join_key(layout.results, "model.txt")) == b"weights"
    else:
        assert isinstance(failure, expected), "\n".join(lines)
        assert "ZeroDivisionError" in failure.cause


def test_a_multi_learner_job_is_refused_naming_the_field(tmp_path: Path) -> None:
    manifest = parse_manifest(example_manifest("acme") | {"resources": {"learners": 2}})

    with pytest.raises(ResourceError, match=r"^resources\.learners: the bare backend runs one"):
        bare_backend(tmp_path).check(manifest)
