"""The end-to-end tests' Airflow users (FAB auth manager) and their API tokens."""

from __future__ import annotations

import httpx

from devkit.deployment import Deployment

ALICE = ("alice", "alice-secret-1")  # tenant acme
BOB = ("bob", "bob-secret-2")  # tenant globex
OPS = ("ops", "ops-secret-3")  # platform admin


def token(deployment: Deployment, user: tuple[str, str]) -> str:
    """A JWT for `user` from the deployment's API server."""
    response = httpx.post(
        f"{deployment.cluster.api_url}/auth/token",
        json={"username": user[0], "password": user[1]},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
