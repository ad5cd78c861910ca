"""The job manifest: the schema a user submits (`schema`), its quantities (`units`), FfDL
manifests imported into it (`ffdl`) and the manifest as a DAG run's conf carries it
(`submission`). The lowest room above `storage`: it may import `trainyard.storage`,
`trainyard.failures` and `trainyard.jobs.layout` (job names and run modes), nothing else.
"""
