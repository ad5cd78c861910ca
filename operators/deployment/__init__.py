"""Deployment glue: tenants sync, the cluster policy, auth managers, notifiers, the CLI group."""
