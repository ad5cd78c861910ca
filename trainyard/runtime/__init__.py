"""The learner runtime: `python -m trainyard.runtime` inside every learner (local process or
pod). It runs the user's command, syncs checkpoints and metrics to storage and reports an
outcome. A learner image ships only this, `storage`, `jobs.layout`, `jobs.checkpoints` and
`failures`, so it may import nothing else of Trainyard (no `cli`, `data`, `tenancy`,
`manifest`), nor typer, httpx or great_expectations; the import contracts check it.
"""
