"""Airflow DAG file: one Trainyard training DAG per tenant of the deployment config.

Everything lives in the trainyard package; this file only registers what the factory builds.
"""

from trainyard.dag_factory import tenant_dags

globals().update(tenant_dags())
