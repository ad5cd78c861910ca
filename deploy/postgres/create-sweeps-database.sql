-- The sweeps' Optuna studies (operators/hooks/sweeps.py, connection trainyard_sweeps): run once
-- by the postgres image when it creates the cluster.
CREATE DATABASE trainyard_sweeps OWNER airflow;
