"""The PyTorch digits example, run directly with the environment contract (no runtime)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytorch-digits"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(out)],
        check=True,
        timeout=120,
    )
    return out


def contract(data_dir: Path, work: Path) -> dict[str, str]:
    for name in ("checkpoints", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "TRAINYARD_DATA_DIR": str(data_dir),
        "TRAINYARD_CHECKPOINT_DIR": str(work / "checkpoints"),
        "TRAINYARD_RESULT_DIR": str(work / "results"),
        "TRAINYARD_METRICS_FILE": str(work / "metrics.jsonl"),
        "TRAINYARD_CHECKPOINT_INTERVAL": "600",
    }


def run_script(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def metrics(work: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]


def test_dataset_files(data_dir: Path) -> None:
    header = (data_dir / "train.csv").read_text().splitlines()[0].split(",")
    assert header == [f"p{i}" for i in range(64)] + ["label"]
    assert len((data_dir / "test.csv").read_text().splitlines()) == 451
    checks = json.loads((data_dir / "expectations.json").read_text())
    assert {check["type"] for check in checks} == {
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
    }
    assert all(check["files"] == "*.csv" for check in checks)


def test_trains_to_target_accuracy(data_dir: Path, tmp_path: Path) -> None:
    env = contract(data_dir, tmp_path)

    run_script(env, "train.py", "--epochs", "8")
    run_script(env, "evaluate.py")

    rows = metrics(tmp_path)
    assert rows[-2]["progress"] == 1.0
    assert rows[-1]["accuracy"] >= 0.95
    assert (tmp_path / "results" / "model.pt").is_file()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-680"]


def test_sigterm_checkpoints_then_the_next_run_resumes(data_dir: Path, tmp_path: Path) -> None:
    env = contract(data_dir, tmp_path)
    # Many epochs so that it is surely still training when stopped (at its 10th step or so).
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--epochs", "20"],
        cwd=EXAMPLE,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "metrics.jsonl").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)

    assert proc.returncode == 143, output
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert 0 < stopped_at < 170
    assert f"checkpoint saved: step-{stopped_at}" in output
    rows_before = len(metrics(tmp_path))

    output = run_script(env, "train.py", "--epochs", "2")

    assert f"resumed from step-{stopped_at} (step {stopped_at})" in output
    resumed = metrics(tmp_path)[rows_before:]
    assert resumed[0]["step"] > stopped_at
    assert resumed[-1]["step"] == 170
    assert resumed[-1]["progress"] == 1.0
