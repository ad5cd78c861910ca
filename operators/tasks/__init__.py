"""The training DAG's task types (operators), their retry policies and callbacks."""
