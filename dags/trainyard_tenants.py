"""Airflow DAG file: one Trainyard training DAG per tenant of the deployment config.

Everything lives in the trainyard package; this file only registers what the factory builds.
A task process only needs its own DAG, which Airflow's parsing context names.
"""

from airflow.sdk import get_parsing_context

from operators.dag_factory import tenant_dags

globals().update(tenant_dags(only=get_parsing_context().dag_id))
