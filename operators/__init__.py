"""Trainyard's Airflow layer: the operators of a training DAG, their hooks, the retry policy
and callbacks, the DAG factory (`dag_factory`), the cluster policy (`admission`), `trainyard
tenants sync` (`tenant_sync`, and its CLI group `cli`). It may import Airflow and the core
(`trainyard`), never `plugins`, `dags`, `devkit` or `tests`.
"""
