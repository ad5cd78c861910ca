"""The `trainyard` CLI with hostile arguments and environment: every run ends with a message
and exit status 0, 1 or 2, never a traceback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.fuzz.strategies import OUTCOMES, PATH_TRICKS, long_strings
from tests.support.fake_airflow import FakeAirflow, fake_airflow
from trainyard.cli.app import app
from trainyard.tenancy.config import CONFIG_ENV

#: Each command with arguments that are valid or nearly so; the strategy mutates them.
COMMANDS = [
    ["submit", "{manifest}"],
    ["status", "acme.digits-mlp.20261124-215908-abcd"],
    ["status", "acme.digits-mlp.20261124-215908-abcd", "--json"],
    ["logs", "acme.digits-mlp.20261124-215908-abcd"],
    ["metrics", "acme.digits-mlp.20261124-215908-abcd", "--tail", "3"],
    ["list", "--tenant", "acme"],
    ["cancel", "acme.digits-mlp.20261124-215908-abcd"],
    ["download", "acme.digits-mlp.20261124-215908-abcd", "{tmp}/out"],
    ["data", "upload", "{tmp}/data", "datasets/x", "--tenant", "acme"],
    ["models", "list", "digits-mlp", "--tenant", "acme"],
    ["models", "show", "digits-mlp", "v3", "--tenant", "acme"],
    ["models", "promote", "digits-mlp", "3", "--tenant", "acme", "--reason", "why"],
]
ARGUMENTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(PATH_TRICKS),
    long_strings(),
    st.sampled_from(
        ["-1", "0", "9" * 400, "nan", "v-1", "--help", "--tenant", "", "acme..x", "globex"]
    ),
    st.sampled_from(["acme.x.y", "acme.digits-mlp.run", "nobody.digits-mlp.x", "ACME.a.b"]),
).filter(lambda arg: "\x00" not in arg)
ENV_VALUES = {
    "TRAINYARD_API_URL": st.sampled_from(["http://[::1", "ftp://x", "not a url", "http://", ""]),
    "TRAINYARD_API_RETRY_SECONDS": st.sampled_from(["nan", "-1", "inf", "1e400", "x", "0"]),
    CONFIG_ENV: st.sampled_from(["/nonexistent.yaml", "/", "/dev/null", "{tmp}/bad.yaml", "{tmp}"]),
    "TRAINYARD_USERNAME": st.text(max_size=10).filter(lambda name: "\x00" not in name),
}


@st.composite
def invocations(draw: st.DrawFn) -> tuple[list[str], dict[str, str]]:
    args = list(draw(st.sampled_from(COMMANDS)))
    for _ in range(draw(st.integers(0, 2))):
        index = draw(st.integers(0, len(args)))
        if draw(st.booleans()) and index < len(args):
            args[index] = draw(ARGUMENTS)
        else:
            args.insert(index, draw(ARGUMENTS))
    env = {}
    for name in draw(st.lists(st.sampled_from(sorted(ENV_VALUES)), max_size=2, unique=True)):
        env[name] = draw(ENV_VALUES[name])
    return args, env


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FakeAirflow]]:
    root = tmp_path_factory.mktemp("cli-fuzz")
    config = {
        "work_dir": "work",
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}}],
    }
    (root / "trainyard.yaml").write_text(yaml.safe_dump(config))
    (root / "bad.yaml").write_bytes(b"tenants: [\xff\xfe")
    (root / "data").mkdir()
    (root / "data" / "a.csv").write_text("x\n1\n")
    (root / "code").mkdir()
    (root / "code" / "train.py").write_text("print(1)\n")
    (root / "job.yaml").write_text(
        "name: digits-mlp\ntenant: acme\nframework: {name: pytorch, version: '2.13'}\n"
        "code: {path: code}\ncommand: python train.py\n"
    )
    with fake_airflow({"trainyard_acme"}) as airflow:
        yield root, airflow


@settings(max_examples=max(settings().max_examples // 3, 50))
@given(invocations())
def test_cli_arguments_and_environment(
    deployment: tuple[Path, FakeAirflow], invocation: tuple[list[str], dict[str, str]]
) -> None:
    root, airflow = deployment
    args, env = invocation
    base: dict[str, Any] = {
        CONFIG_ENV: str(root / "trainyard.yaml"),
        "TRAINYARD_API_URL": airflow.url,
        "TRAINYARD_API_RETRY_SECONDS": "0",
        "TRAINYARD_USERNAME": "alice",
        "TRAINYARD_PASSWORD": "s3cret",
    }
    fill = {"{tmp}": str(root), "{manifest}": str(root / "job.yaml")}

    def filled(value: str) -> str:
        for marker, text in fill.items():
            value = value.replace(marker, text)
        return value

    result = CliRunner().invoke(
        app, [filled(arg) for arg in args], env={k: filled(v) for k, v in (base | env).items()}
    )

    counts = OUTCOMES.setdefault("cli", Counter())
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    counts["crashed" if crashed else "valid" if result.exit_code == 0 else "rejected"] += 1
    assert not crashed, f"{args} {env}: {result.exception!r}\n{result.output}"
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert "error" in result.output.lower() or "usage" in result.output.lower(), result.output
