"""The CLI's API client settings from the environment: an invalid variable is named."""

from __future__ import annotations

import pytest

from trainyard.cli.client import AirflowClient, ApiError, ApiSettings, SettingsError

#: A user's credentials, which have no default.
USER = {"TRAINYARD_USERNAME": "alice", "TRAINYARD_PASSWORD": "s3cret"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"TRAINYARD_API_URL": "http://[::1"}, "TRAINYARD_API_URL", id="bad-url"),
        pytest.param({"TRAINYARD_API_URL": "ftp://host"}, "TRAINYARD_API_URL", id="scheme"),
        pytest.param({"TRAINYARD_API_URL": "x" * 500}, "TRAINYARD_API_URL", id="no-host"),
        pytest.param(
            {"TRAINYARD_API_RETRY_SECONDS": "soon"}, "TRAINYARD_API_RETRY_SECONDS", id="text"
        ),
        pytest.param(
            {"TRAINYARD_API_RETRY_SECONDS": "nan"}, "TRAINYARD_API_RETRY_SECONDS", id="nan"
        ),
        pytest.param(
            {"TRAINYARD_API_RETRY_SECONDS": "-1"}, "TRAINYARD_API_RETRY_SECONDS", id="negative"
        ),
        pytest.param(
            {"TRAINYARD_API_RETRY_SECONDS": "1e400"}, "TRAINYARD_API_RETRY_SECONDS", id="inf"
        ),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as raised:
        ApiSettings.from_env({**USER, **env})

    assert str(raised.value).startswith(f"{variable}: ")
    assert len(str(raised.value)) < 300


def test_defaults() -> None:
    settings = ApiSettings.from_env(USER)

    assert settings.url == "http://127.0.0.1:8080"
    assert settings.connect_retry_seconds == 20.0
    assert (settings.username, settings.password) == ("alice", "s3cret")


@pytest.mark.parametrize(
    "missing",
    [
        pytest.param("TRAINYARD_USERNAME", id="no-user"),
        pytest.param("TRAINYARD_PASSWORD", id="no-password"),
    ],
)
def test_no_well_known_credentials_to_fall_back_on(missing: str) -> None:
    """admin/admin is no default: a missing user or password is named, with its fix."""
    env = {**USER, missing: ""}
    with pytest.raises(SettingsError) as raised:
        ApiSettings.from_env(env)

    assert str(raised.value).startswith(f"{missing}: not set; export {missing}")


def test_an_unreachable_api_is_an_api_error_naming_the_url() -> None:
    settings = ApiSettings.from_env(
        {**USER, "TRAINYARD_API_URL": "http://127.0.0.1:9", "TRAINYARD_API_RETRY_SECONDS": "0"}
    )
    with AirflowClient(settings) as client, pytest.raises(ApiError) as raised:
        client.get_dag("trainyard_acme")

    assert "cannot reach the Airflow API at http://127.0.0.1:9" in str(raised.value)
    assert "TRAINYARD_API_URL" in str(raised.value)


def test_a_url_no_try_can_reach_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ftp:// URL fails at once: retrying it for the whole budget would only delay the
    error that names TRAINYARD_API_URL."""
    client = AirflowClient(ApiSettings("ftp://127.0.0.1", "admin", "admin", 60))
    client._token = "token"  # no login: the request itself is what is counted
    sends = []
    original = client._send

    def counted(*args: object, **kwargs: object) -> object:
        sends.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "_send", counted)
    with client, pytest.raises(ApiError, match="TRAINYARD_API_URL"):
        client.request("GET", "/dags")
    assert len(sends) == 1
