"""Admission of a run's learners into its tenant's pool, sized by the run's own manifest.

Airflow fixes a task's `pool` and `pool_slots` when the DAG is parsed, but a job's size
(`resources.gpus`, `resources.learners`) arrives with each run's conf. Airflow 3.3 calls the
cluster policy `task_instance_mutation_hook(task_instance, dag_run)` scheduler-side (API server
and scheduler) whenever it creates or re-creates a task instance of a run, with that run in
hand; this hook moves the learner's and the evaluation's task instances to the right pool
(GPU or CPU) with the right number of slots before the scheduler looks at pools.
`config/airflow_local_settings.py` exposes it to Airflow.

The hook must not touch the database: it only reads `dag_run.conf` and the task's params.
"""

from __future__ import annotations

import logging
from typing import Any

from trainyard.manifest.schema import ManifestError
from trainyard.manifest.submission import manifest_from_conf
from trainyard.tenancy.names import learner_pool_tenant
from trainyard.tenancy.quotas import POOLED_TASKS, learner_pool

log = logging.getLogger(__name__)


def _run_conf(task_instance: Any, dag_run: Any) -> dict[str, Any]:
    """The params a task of this run will see: the DAG's defaults, overridden by the conf."""
    params = getattr(getattr(task_instance, "task", None), "params", None)
    conf: dict[str, Any] = dict(params.dump()) if params is not None else {}
    conf.update(dag_run.conf or {})
    return conf


#: Which learners each pooled task runs, by task id.
_MODE_OF_TASK = {task_id: mode for mode, task_id in POOLED_TASKS.items()}


def task_instance_mutation_hook(task_instance: Any, dag_run: Any) -> None:
    """Put a Trainyard learner in its tenant's GPU or CPU pool with `gpus x learners` slots
    (`gpus` for the evaluation, which runs one learner).

    Other task instances, and learners of runs whose manifest is invalid (their validate task
    fails the run, so no learner runs), keep the pool the DAG declared.
    """
    if dag_run is None:  # early construction, before the task instance has a run
        return
    tenant = learner_pool_tenant(task_instance.pool)
    mode = _MODE_OF_TASK.get(task_instance.task_id)
    if tenant is None or mode is None:
        return
    try:
        resources = manifest_from_conf(_run_conf(task_instance, dag_run)).resources
    except (ManifestError, TypeError, ValueError):
        return
    request = learner_pool(tenant, resources, mode)
    task_instance.pool = request.pool
    task_instance.pool_slots = request.slots
    log.debug("%s takes %d slots of pool %s", task_instance, request.slots, request.pool)
