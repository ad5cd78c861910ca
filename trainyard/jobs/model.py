"""The job-level commit of a trained model.

The learner runtime publishes the result directory like a checkpoint: the files, then
`results/_MANIFEST.json` with the size and sha256 of each. The commit task checks that every
listed file is in storage with its size before the job counts as having a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainyard.failures import PlatformFault, UserError
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout
from trainyard.storage import ObjectNotFound, ObjectStore, join_key


@dataclass(frozen=True)
class ModelCommit:
    key: str
    files: dict[str, dict[str, Any]]
    checkpoint_step: int | None


def commit_model(store: ObjectStore, layout: JobLayout, current_attempt: int) -> ModelCommit:
    """Verify the published results of a job and return what was committed.

    Only results of the job's current attempt (`current_attempt`; 0: none claimed it) count:
    those of an attempt it superseded are not its model (`trainyard.jobs.fencing`).

    Raises:
        UserError: the training command saved no model files.
        PlatformFault: the publication is missing, incomplete or a superseded attempt's (a
            retry may complete it).
    """
    retrain = "clear the learner task to train again; the newest checkpoint is kept"
    try:
        manifest = store.get_json(layout.results_manifest)
    except ObjectNotFound as missing:
        raise PlatformFault(
            f"the learner published no results manifest ({missing})", retrain
        ) from missing
    published_by = manifest.get("attempt", current_attempt)
    if current_attempt and published_by != current_attempt:  # 0: no attempt claimed the job
        raise PlatformFault(
            f"the results were published by attempt {published_by}, not by the job's current "
            f"attempt {current_attempt}",
            retrain,
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    if not files:
        raise UserError(
            "the training command saved no files in TRAINYARD_RESULT_DIR",
            "save the trained model (and anything evaluation needs) under $TRAINYARD_RESULT_DIR",
        )
    stored = {info.key: info.size for info in store.list(layout.results)}
    for relative, expected in files.items():
        size = stored.get(join_key(layout.results, relative))
        if size != expected["size"]:
            raise PlatformFault(
                f"model file {relative!r} is missing or incomplete in {store.describe()} "
                f"(expected {expected['size']} bytes, found {size})",
                "clear the learner task to publish the model again",
            )
    return ModelCommit(
        key=layout.results,
        files=files,
        checkpoint_step=CheckpointStore(store, layout).latest_step(),
    )
