"""Trainyard's Airflow cluster policies; Airflow imports this module from $AIRFLOW_HOME/config.

`make demo` and the tests link it there; a deployment copies or mounts it to the same place
(every component that creates runs needs it: the API server and the scheduler).
"""

from operators.deployment.admission import task_instance_mutation_hook

__all__ = ["task_instance_mutation_hook"]
