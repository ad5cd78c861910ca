"""The deployment and its tenants: the deployment config (`config`: tenants, storage,
backends, scheduled jobs), the names of each tenant's Airflow objects (`names`: roles, pools,
connections) and its quotas (`quotas`). Plain data and names, no Airflow: it may import
`manifest`, `jobs.layout`, `storage.config` and `failures`.
"""
