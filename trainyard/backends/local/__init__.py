"""The local backend: learners are child processes of the Airflow task, each in its framework's
environment and (when the deployment sandboxes user code) its sandbox."""

from trainyard.backends.local.backend import LocalProcessBackend

__all__ = ["LocalProcessBackend"]
