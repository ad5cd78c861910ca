"""The `trainyard` command line: submit and follow jobs, manage data, models and tenants.

Core, outside Airflow: it talks to Airflow's REST API (`client`) and to tenants' storage, and may
import every core room (manifest, tenancy, jobs, data, storage) but never `airflow`, `operators`
or `plugins`; groups that need Airflow come from the Airflow layer through entry points
(`groups`). One module per command group: `app` (the job commands at the root), `data`,
`models`; `session` is what they share, `status` a job's state as the API and its record tell it.
Importing the package loads nothing: `client` and `status` serve the tests and benchmarks too.
"""

from __future__ import annotations


def main() -> None:
    """The `trainyard` console script: build the command tree only when it runs."""
    from trainyard.cli.app import main as run

    run()
