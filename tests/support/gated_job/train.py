"""A training job that trains until the test lets it finish: it waits for a file to exist.

Tests that need a learner to be running at a moment of their choosing (all jobs training at
once, a crash mid-training) give it `--until PATH`; once PATH exists it writes its model (a
file in TRAINYARD_RESULT_DIR, what the commit step verifies) and exits 0.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", type=Path, required=True)
    flag = parser.parse_args().until
    print(f"training until {flag} exists", flush=True)
    while not flag.exists():
        time.sleep(0.5)
    Path(os.environ["TRAINYARD_RESULT_DIR"], "model.txt").write_text("trained\n")
    print("done", flush=True)


if __name__ == "__main__":
    main()
