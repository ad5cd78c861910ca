"""What `make demo` says about the learners' sandbox."""

from __future__ import annotations

import shutil

import pytest

from devkit.demo import sandbox_notice


@pytest.mark.parametrize(
    ("bwrap", "says"),
    [
        pytest.param("/usr/bin/bwrap", "in a bubblewrap sandbox", id="installed"),
        pytest.param(None, "unsandboxed", id="missing"),
    ],
)
def test_the_demo_says_whether_learners_are_sandboxed(
    monkeypatch: pytest.MonkeyPatch, bwrap: str | None, says: str
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: bwrap if name == "bwrap" else None)
    notice = sandbox_notice()
    assert says in notice
    assert ("apt-get install bubblewrap" in notice) is (bwrap is None)
