"""Development tooling, not shipped: `make demo` (`demo`), the Airflow process harness
(`airflow_env`, `cluster`, `deployment`), throwaway S3 servers (`s3_server`, `moto_server`) and
learner-process helpers (`learners`). The tests and the benchmarks share it; it may import
everything but `tests` and `bench`.
"""
