"""The model registry: every successful run becomes a version; only a better one goes live.

Keys (trainyard/jobs/layout.py ModelLayout), relative to the tenant's storage root:

    models/<job-name>/v<N>/model/...                the model: the files the job committed
    models/<job-name>/v<N>/model/_MANIFEST.json     their sizes and sha256 (copied last)
    models/<job-name>/v<N>/version.json             ModelVersion: metrics, decision, lineage
    models/<job-name>/production                    ProductionPointer: the live version

The model files sit under `model/` so that no file a job publishes can clash with
`version.json`; `evaluation.json` is not copied (its metrics are in version.json).

Runs of the same job may finish together, with no lock server: a version number is claimed by
creating its version.json only if absent, and the pointer only moves by a compare-and-swap
against the token it was read with (`ObjectStore.write_if`). A writer that loses re-reads and
decides again, so the pointer always names the best model, and is never half written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from trainyard.jobs.evaluation import gate, metric_value
from trainyard.jobs.layout import MANIFEST, ModelLayout, published_manifest
from trainyard.jobs.lineage import Lineage
from trainyard.limits import shorten
from trainyard.manifest.schema import EvaluationSpec
from trainyard.storage import ObjectNotFound, ObjectStore, check_key, join_key

VersionStatus = Literal["registered", "promoted", "rejected"]

_VERSION_ARG = re.compile(r"v?([1-9][0-9]*)")


class ModelVersion(BaseModel):
    """`v<N>/version.json`. `status` is the decision taken about this version; which version
    is live now is the production pointer's business."""

    job_name: str
    version: int
    job_id: str
    created_at: datetime
    metric: str
    value: float | None  # None: the evaluation reported no finite number for `metric`
    metrics: dict[str, Any]
    status: VersionStatus = "registered"
    reason: str = ""
    lineage: Lineage


class ProductionPointer(BaseModel):
    """`models/<job-name>/production`; `value` is kept here so that the gate compares with
    exactly the version the pointer named when it was read."""

    version: int
    value: float | None
    promoted_at: datetime
    reason: str
    manual: bool = False


def parse_version(text: str) -> int:
    """'3' or 'v3' -> 3, as people type versions."""
    match = _VERSION_ARG.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid model version {shorten(text)}: use a number such as 3 or v3")
    return int(match[1])


def _encode(model: BaseModel) -> bytes:
    return model.model_dump_json(indent=2).encode()


class ModelRegistry:
    """The model versions of one job in a tenant's storage."""

    def __init__(self, store: ObjectStore, job_name: str) -> None:
        if "/" in job_name:
            raise ValueError(f"invalid job name {shorten(job_name)}: it contains '/'")
        check_key(job_name)
        self.store = store
        self.job_name = job_name
        self.layout = ModelLayout(job_name)
        self.pointer_key = self.layout.production

    def model_prefix(self, version: int) -> str:
        """Where the model files of `version` are (what a deployment downloads)."""
        return self.layout.model(version)

    # Reading

    def get(self, version: int) -> ModelVersion:
        try:
            return ModelVersion.model_validate_json(
                self.store.get_bytes(self.layout.version_record(version))
            )
        except ObjectNotFound as missing:
            raise LookupError(
                f"job {shorten(self.job_name)} has no model version v{version} in "
                f"{self.store.describe()}"
            ) from missing

    def _numbers(self) -> list[int]:
        """The version numbers in use, ascending."""
        found = (
            self.layout.number_of_record(info.key) for info in self.store.list(self.layout.root)
        )
        return sorted(number for number in found if number is not None)

    def versions(self) -> list[ModelVersion]:
        return [self.get(number) for number in self._numbers()]

    def production_pointer(self) -> ProductionPointer | None:
        return self._read_pointer()[0]

    def production(self) -> ModelVersion | None:
        pointer = self.production_pointer()
        return None if pointer is None else self.get(pointer.version)

    def _read_pointer(self) -> tuple[ProductionPointer | None, str | None]:
        """The pointer and the token to replace it with (None, None: no production yet)."""
        try:
            data, token = self.store.read_with_token(self.pointer_key)
        except ObjectNotFound:
            return None, None
        return ProductionPointer.model_validate_json(data), token

    # Writing

    def register(
        self,
        job_id: str,
        results_prefix: str,
        metrics: Mapping[str, Any],
        metric: str,
        lineage: Lineage,
    ) -> ModelVersion:
        """Store a job's committed results as the next version, status "registered".

        One version per job id: a retried task gets back the version its first try claimed,
        with the files copied again (a crash may have cut the copy short).
        """
        files = self.store.get_json(published_manifest(results_prefix))["files"]
        version = self._claim(
            job_id,
            lambda number: ModelVersion(
                job_name=self.job_name,
                version=number,
                job_id=job_id,
                created_at=datetime.now(UTC),
                metric=metric,
                value=metric_value(metrics, metric),
                metrics=dict(metrics),
                lineage=lineage,
            ),
        )
        target = self.model_prefix(version.version)
        for relative in [*files, MANIFEST]:  # the manifest last, as the results were published
            self.store.copy(join_key(results_prefix, relative), join_key(target, relative))
        return version

    def _claim(self, job_id: str, record: Callable[[int], ModelVersion]) -> ModelVersion:
        """Create the version.json of the lowest free number for `job_id`, or return its own."""
        numbers = self._numbers()
        for number in numbers:
            existing = self.get(number)
            if existing.job_id == job_id:
                return existing
        number = max(numbers, default=0) + 1
        while True:
            candidate = record(number)
            if self.store.write_if(self.layout.version_record(number), _encode(candidate), None):
                return candidate
            try:
                holder = self.get(number)
            except LookupError:  # a racing write that did not complete (S3's 409): try again
                continue
            if holder.job_id == job_id:  # our own first try, its answer lost to a fault
                return holder
            number += 1

    def decide(self, version: int | ModelVersion, spec: EvaluationSpec | None) -> ModelVersion:
        """Apply the evaluation gate to a registered version: promote it only if it passes
        the threshold and beats the production version; record the decision and why.

        Without an evaluation (`spec` None) the newest version is production. A version
        decided before is returned as it is (a retried task).
        """
        candidate = self.get(version if isinstance(version, int) else version.version)
        if candidate.status != "registered":
            return candidate
        while True:
            production, token = self._read_pointer()
            if production is not None and production.version == candidate.version:
                # Our pointer write landed but its answer, or the record after it, was lost.
                return self._record(candidate.version, "promoted", production.reason)
            if spec is not None:
                decision = gate(spec, candidate.metrics, production)
                promote, reason = decision.promote, decision.reason
            elif production is None or candidate.version > production.version:
                promote, reason = True, "no evaluation: the newest version is production"
            else:
                promote = False
                reason = f"no evaluation, and the newer v{production.version} is production"
            if not promote:
                return self._record(candidate.version, "rejected", reason)
            pointer = ProductionPointer(
                version=candidate.version,
                value=candidate.value,
                promoted_at=datetime.now(UTC),
                reason=reason,
            )
            if self.store.write_if(self.pointer_key, _encode(pointer), token):
                return self._record(candidate.version, "promoted", reason)

    def promote(self, version: int | ModelVersion, reason: str) -> ModelVersion:
        """Make `version` production whatever the gate said (an operator's override, or a job
        without evaluation); the pointer records it as manual."""
        chosen = self.get(version if isinstance(version, int) else version.version)
        pointer = ProductionPointer(
            version=chosen.version,
            value=chosen.value,
            promoted_at=datetime.now(UTC),
            reason=reason,
            manual=True,
        )
        while True:  # until no other writer moved the pointer between our read and write
            _, token = self._read_pointer()
            if self.store.write_if(self.pointer_key, _encode(pointer), token):
                break
        note = f"promoted manually: {reason}"
        if chosen.status == "rejected":
            note += f" (the gate had rejected it: {chosen.reason})"
        return self._record(chosen.version, "promoted", note)

    def _record(self, version: int, status: VersionStatus, reason: str) -> ModelVersion:
        """Write the decision into version.json, by compare-and-swap like every other update."""
        key = self.layout.version_record(version)
        while True:
            data, token = self.store.read_with_token(key)
            updated = ModelVersion.model_validate_json(data).model_copy(
                update={"status": status, "reason": reason}
            )
            if self.store.write_if(key, _encode(updated), token):
                return updated
