"""What every `trainyard` command says at start about the learners' sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.fake_airflow import fake_airflow
from tests.support.paths import path_without
from trainyard.cli.app import app
from trainyard.tenancy.config import CONFIG_ENV


@pytest.mark.parametrize(
    ("sandbox", "bwrap", "says"),
    [
        pytest.param({}, False, "refused at validate", id="auto-without-bwrap"),
        pytest.param({"enabled": True}, False, "refused at validate", id="on-without-bwrap"),
        pytest.param({"enabled": False}, True, "unsandboxed", id="off"),
        pytest.param({}, True, None, id="auto-with-bwrap"),
    ],
)
def test_a_command_warns_once_at_start_when_the_sandbox_is_off_or_unavailable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sandbox: dict[str, Any],
    bwrap: bool,
    says: str | None,
) -> None:
    config = {
        "work_dir": "work",
        "sandbox": sandbox,
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    if not bwrap:
        monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))
    with fake_airflow({"trainyard_acme"}) as airflow:
        monkeypatch.setenv("TRAINYARD_API_URL", airflow.url)
        monkeypatch.setenv("TRAINYARD_USERNAME", "alice")
        monkeypatch.setenv("TRAINYARD_PASSWORD", "s3cret")

        result = CliRunner().invoke(app, ["models", "list", "digits-mlp", "--tenant", "acme"])

    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    if says is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert says in warnings[0]
        assert ("apt-get install bubblewrap" in warnings[0]) is (not bwrap)
