"""Reading the kernel's word that its OOM killer ended the command (cgroup counters, its log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.runtime import oom


@pytest.fixture
def fake_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(oom, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(oom, "PROC_CGROUP", tmp_path / "proc-self-cgroup")
    monkeypatch.setattr(oom, "KERNEL_LOG", tmp_path / "kmsg")
    return tmp_path


def counter(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("own", "files", "expected"),
    [
        pytest.param(
            "0::/job.slice/learner\n",
            {"job.slice/learner/memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n"},
            1,
            id="cgroup-v2-memory-events",
        ),
        pytest.param(
            "4:memory:/docker/abc\n1:cpu:/docker/abc\n",
            {"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"},
            4,
            id="cgroup-v1-own-cgroup-mounted-as-root",
        ),
        pytest.param("0::/\n", {}, None, id="no-counter-readable"),
    ],
)
def test_the_oom_kill_counter_of_the_own_memory_cgroup(
    fake_kernel: Path, own: str, files: dict[str, str], expected: int | None
) -> None:
    (fake_kernel / "proc-self-cgroup").write_text(own)
    for name, text in files.items():
        counter(fake_kernel / "cgroup" / name, text)

    assert oom.oom_kills() == expected


def test_a_rising_counter_or_the_kernel_log_names_the_oom_kill(fake_kernel: Path) -> None:
    (fake_kernel / "proc-self-cgroup").write_text("0::/learner\n")
    events = fake_kernel / "cgroup" / "learner" / "memory.events"
    counter(events, "oom_kill 0\n")
    witness = oom.OomWitness()
    assert witness.killed(4242) is None

    (fake_kernel / "kmsg").write_text(
        "3,811,9912,-;Memory cgroup out of memory: Killed process 4242 (python) total-vm:1kB\n"
    )
    assert witness.killed(4242) == "the kernel log says the OOM killer killed process 4242"
    assert witness.killed(42) is None

    counter(events, "oom_kill 1\n")
    assert witness.killed(42) == "the memory cgroup's oom_kill count rose from 0 to 1"
