"""`make demo`'s start-up: the learners' sandbox (said, installed or asked for) and the demo's
generated credentials. The demo running for real is tests/e2e/test_demo.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.demo import (
    ADMIN,
    CREDENTIALS_FILE,
    demo_credentials,
    ensure_bubblewrap,
    sandbox_notice,
    tenant_user,
)
from devkit.learners import wait_until
from tests.support.paths import path_without
from trainyard.tenancy.config import TrainyardConfig, load_config


def demo_config(tmp_path: Path, sandbox: dict[str, Any]) -> TrainyardConfig:
    document = {
        "work_dir": "work",
        "sandbox": sandbox,
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(document))
    return load_config(tmp_path / "trainyard.yaml")


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH without bubblewrap; returns the one directory it consists of."""
    path = tmp_path / "bin"
    monkeypatch.setenv("PATH", path_without("bwrap", path))
    return path


@pytest.mark.parametrize(
    ("sandbox", "bwrap", "says"),
    [
        pytest.param({}, True, "in a bubblewrap sandbox", id="installed"),
        pytest.param({}, False, "refused at validate", id="missing"),
        pytest.param({"enabled": False}, True, "unsandboxed", id="off"),
    ],
)
def test_the_demo_says_whether_learners_are_sandboxed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sandbox: dict[str, Any],
    bwrap: bool,
    says: str,
) -> None:
    if not bwrap:
        request.getfixturevalue("no_bwrap")

    notice = sandbox_notice(demo_config(tmp_path, sandbox))

    assert says in notice
    assert ("apt-get install bubblewrap" in notice) is (not bwrap)


def test_as_root_the_demo_installs_a_missing_bubblewrap_with_apt_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_bwrap: Path
) -> None:
    """apt-get is a stand-in on the PATH that records its arguments and 'installs' bwrap."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    calls = tmp_path / "apt-get.calls"
    apt_get = no_bwrap / "apt-get"
    apt_get.unlink(missing_ok=True)
    apt_get.write_text(
        f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {calls}\n'
        f'[ "$1" = install ] && printf "#!/bin/sh\\n" > {no_bwrap}/bwrap '
        f"&& chmod +x {no_bwrap}/bwrap\nexit 0\n"
    )
    apt_get.chmod(0o755)

    ensure_bubblewrap(demo_config(tmp_path, {}), tmp_path / "trainyard.yaml")

    assert calls.read_text().splitlines() == [
        "noninteractive update -qq",
        "noninteractive install -y -qq bubblewrap",
    ]


def test_without_root_the_demo_stops_naming_the_command_that_installs_bubblewrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_bwrap: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(SystemExit) as stopped:
        ensure_bubblewrap(demo_config(tmp_path, {}), tmp_path / "trainyard.yaml")

    assert "sudo apt-get install bubblewrap" in str(stopped.value.code)
    assert "sandbox.enabled: false" in str(stopped.value.code)


@pytest.mark.usefixtures("no_bwrap")
def test_a_demo_whose_config_turned_the_sandbox_off_needs_no_bubblewrap(tmp_path: Path) -> None:
    ensure_bubblewrap(demo_config(tmp_path, {"enabled": False}), tmp_path / "trainyard.yaml")


def test_the_demos_passwords_are_generated_once_and_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    first = demo_credentials(tmp_path, ["acme", "globex"])

    assert set(first) == {ADMIN, tenant_user("acme"), tenant_user("globex")}
    assert first[ADMIN] != "admin"
    assert len(set(first.values())) == 3
    assert all(len(password) >= 20 for password in first.values())
    path = tmp_path / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first
    # The next start keeps them, and a tenant added since gets a user of its own.
    again = demo_credentials(tmp_path, ["acme", "globex", "initech"])
    assert {user: again[user] for user in first} == first
    assert again[tenant_user("initech")] not in first.values()


def test_a_component_that_exits_is_started_again(tmp_path: Path) -> None:
    """`serve` keeps the demo's Airflow up as a restart policy would: a fake `airflow` whose
    every component exits at once is started again and again (the scheduler, say, after a
    PostgreSQL restart)."""
    starts = tmp_path / "starts"
    fake = tmp_path / "bin" / "airflow"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$1" >> {starts}\nexit 1\n')
    fake.chmod(0o755)
    demo_config(tmp_path, {"enabled": False})
    env = {
        **os.environ,
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "TRAINYARD_CONFIG": str(tmp_path / "trainyard.yaml"),
    }
    server = subprocess.Popen([sys.executable, "-m", "devkit.demo", "serve"], env=env)
    try:

        def scheduler_starts() -> int:
            lines = starts.read_text().split() if starts.exists() else []
            return lines.count("scheduler")

        wait_until(lambda: scheduler_starts() >= 2, "the scheduler to be started again", 60)
        assert server.poll() is None  # it keeps serving
    finally:
        server.kill()
        server.wait()
