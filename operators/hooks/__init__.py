"""Airflow hooks: a tenant's storage through its Airflow connection."""
