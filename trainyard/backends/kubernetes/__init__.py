"""The Kubernetes backend: learners are pods in the tenant's namespace.

Nothing here imports the Kubernetes client at module level: the DAG processor imports this
package through the DAG factory, and parsing DAGs must not pay for it.
"""

from trainyard.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
