"""Trainyard's core: everything about a training job that does not need Airflow.

Grouped by concern, one subpackage per room: `manifest` (what a user submits), `tenancy` (the
deployment config and each tenant's names and quotas), `jobs` (a job's storage layout, record,
checkpoints, lineage, evaluation and model registry), `data` (code and data packaging, staging,
validation), `storage`, `backends` (where learner processes run), `runtime` (the learner
runtime inside each learner), `cli` (the `trainyard` command); `failures` are every room's.
The core never imports `airflow`, `operators`, `plugins`, `dags`, `devkit` or `tests`; the
import contracts in pyproject.toml (`lint-imports`) hold it to that.
"""
