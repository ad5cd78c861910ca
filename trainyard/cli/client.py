"""A small client for the parts of Airflow's REST API v2 that Trainyard uses.

It logs in with a username and password (`POST /auth/token`, served by both the simple and the
FAB auth manager) and retries connection failures briefly, so a CLI call survives an API
server restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from trainyard.limits import shorten

DEFAULT_API_URL = "http://127.0.0.1:8080"
DEFAULT_CONNECT_RETRY_SECONDS = 20.0
#: Longest a CLI call keeps retrying an unreachable API server.
MAX_CONNECT_RETRY_SECONDS = 3600.0


class SettingsError(ValueError):
    """An environment variable of the client's settings is invalid; the message names it."""


def _api_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as error:
        raise SettingsError(
            f"TRAINYARD_API_URL: {shorten(value)} is not a URL ({error}): use the API server's "
            f"address, such as {DEFAULT_API_URL}"
        ) from error
    if url.scheme not in ("http", "https") or not url.host:
        raise SettingsError(
            f"TRAINYARD_API_URL: {shorten(value)} is not an http(s) URL with a host: use the API "
            f"server's address, such as {DEFAULT_API_URL}"
        )
    return value.rstrip("/")


def _retry_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_CONNECT_RETRY_SECONDS:  # NaN fails too
        raise SettingsError(
            f"TRAINYARD_API_RETRY_SECONDS: {shorten(value)} is not a number of seconds from 0 to "
            f"{MAX_CONNECT_RETRY_SECONDS:.0f}: use, say, {DEFAULT_CONNECT_RETRY_SECONDS:.0f}"
        )
    return seconds


class ApiError(Exception):
    """The API refused a request; the message carries the status and Airflow's detail."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ApiSettings:
    url: str
    username: str
    password: str
    connect_retry_seconds: float = DEFAULT_CONNECT_RETRY_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ApiSettings:
        """TRAINYARD_API_URL, TRAINYARD_USERNAME, TRAINYARD_PASSWORD and
        TRAINYARD_API_RETRY_SECONDS (how long to retry an unreachable API server).

        Raises:
            SettingsError: naming the variable that is invalid.
        """
        return cls(
            url=_api_url(env.get("TRAINYARD_API_URL", DEFAULT_API_URL)),
            username=_required(env, "TRAINYARD_USERNAME", "your Airflow user name"),
            password=_required(env, "TRAINYARD_PASSWORD", "that user's password"),
            connect_retry_seconds=_retry_seconds(
                env.get("TRAINYARD_API_RETRY_SECONDS", str(DEFAULT_CONNECT_RETRY_SECONDS))
            ),
        )


def _required(env: Mapping[str, str], variable: str, what: str) -> str:
    """A credential variable: there is no default user or password to fall back on."""
    value = env.get(variable, "")
    if not value:
        raise SettingsError(
            f"{variable}: not set; export {variable} with {what} (make demo prints the demo's)"
        )
    return value


class AirflowClient:
    def __init__(self, settings: ApiSettings, timeout: float = 30.0) -> None:
        self.settings = settings
        self._http = httpx.Client(base_url=settings.url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _login(self) -> str:
        response = self._http.post(
            "/auth/token",
            json={"username": self.settings.username, "password": self.settings.password},
        )
        if response.status_code >= 400:
            raise ApiError(
                response.status_code,
                f"login to {self.settings.url} as {self.settings.username!r} failed "
                f"({response.status_code}): check TRAINYARD_USERNAME and TRAINYARD_PASSWORD",
            )
        return str(response.json()["access_token"])

    def _send(
        self, method: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        if self._token is None:
            self._token = self._login()
        headers = {**headers, "Authorization": f"Bearer {self._token}"}
        return self._http.request(method, path, headers=headers, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        api: str = "/api/v2",
        **kwargs: Any,
    ) -> Any:
        """Send an authenticated request to `api` (Airflow's REST API v2, or `/trainyard/api`
        of the Trainyard plugin) and return the decoded JSON body.

        Connection failures are retried for `connect_retry_seconds`, so a call survives an
        API server restart; always once, so an answer lost after a wait longer than that
        (a busy server's: it may have done the work) is asked for again.
        """
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential(multiplier=0.5, max=5),
            stop=stop_after_attempt(2) & stop_after_delay(self.settings.connect_retry_seconds),
            reraise=True,
        )
        try:
            return retrying(self._request, method, f"{api}{path}", headers or {}, **kwargs)
        except httpx.RequestError as error:
            raise ApiError(
                0,
                f"cannot reach the Airflow API at {self.settings.url} ({error}): is it running? "
                "check TRAINYARD_API_URL",
            ) from error

    def _request(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        response = self._send(method, path, headers, **kwargs)
        if response.status_code == 401:  # the token expired: log in again, once
            self._token = None
            response = self._send(method, path, headers, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(
                response.status_code, f"{method} {path}: {response.status_code} {detail}"
            )
        return response.json() if response.content else None

    def trigger_run(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Start a run with our own run id, exactly once.

        A retried POST whose first try went through gets 409: the run that exists is ours.
        """
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            result: dict[str, Any] = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        except ApiError as error:
            if error.status_code != 409:
                raise
            return self.get_run(dag_id, run_id)
        return result

    def get_dag(self, dag_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/dags/{dag_id}")
        return result

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def list_runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        result = self.request(
            "GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit}
        )
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})

    def record_data_event(self, tenant: str, path: str, files: int) -> list[str]:
        """Tell Airflow (through the Trainyard plugin) that new data landed under `path` of the
        tenant's storage; return the URIs of the data triggers that fired."""
        result = self.request(
            "POST",
            f"/tenants/{tenant}/data-events",
            api="/trainyard/api",
            json={"path": path, "files": files},
        )
        assets: list[str] = result["assets"]
        return assets

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        result = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        instances: list[dict[str, Any]] = result["task_instances"]
        return instances

    def task_tries(self, dag_id: str, task_id: str, limit: int = 100) -> dict[str, int]:
        """The try number of `task_id` in each of the DAG's newest runs, by run id (one request
        for all runs: `~` stands for every run)."""
        result = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/~/taskInstances",
            params={"task_id": task_id, "order_by": "-run_after", "limit": limit},
        )
        return {ti["dag_run_id"]: int(ti.get("try_number") or 0) for ti in result["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        """The lines of one task attempt's log, as Airflow stores them."""
        result = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        return [_format_log_event(event) for event in result["content"]]


#: Fields of a structured log event that every line carries: left out of the text.
def _transient(error: BaseException) -> bool:
    """Worth another try: the API server is unreachable or failed (e.g. its DB was busy); not
    a URL no try can reach (ftp://, say)."""
    if isinstance(error, httpx.UnsupportedProtocol):
        return False
    return isinstance(error, httpx.TransportError) or (
        isinstance(error, ApiError) and error.status_code >= 500
    )


_LOG_CONTEXT_FIELDS = {
    "timestamp",
    "level",
    "event",
    "logger",
    "filename",
    "lineno",
    "loc",
    "ti_id",
    "task_id",
    "try_number",
    "run_id",
    "dag_id",
    "map_index",
    "error_detail",
    "chan",
    "bundle_name",
    "bundle_version",
    "dag_file",
    "bundle_prepare_ms",
    "dag_file_parse_ms",
    "pid",
}


def _format_log_event(event: Any) -> str:
    """One structured log event as text; a failed task's exception is part of it."""
    if isinstance(event, str):
        return event
    timestamp = event.get("timestamp") or ""
    level = (event.get("level") or "").upper()
    text = " ".join(part for part in (timestamp, level, str(event.get("event", ""))) if part)
    details = {k: v for k, v in event.items() if k not in _LOG_CONTEXT_FIELDS}
    if details:
        text += " " + " ".join(f"{key}={value}" for key, value in details.items())
    for error in event.get("error_detail") or []:
        text += f"\n{error.get('exc_type')}: {error.get('exc_value')}"
    return text
