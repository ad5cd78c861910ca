"""Airflow hooks: a tenant's storage and Airflow's REST API, each through an Airflow connection."""
