"""Score the trained model on the held-out digits; the metric goes to TRAINYARD_METRICS_FILE."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jax_train import MODEL_FILE, accuracy, load_params, load_split


def main() -> None:
    params = load_params(Path(os.environ["TRAINYARD_RESULT_DIR"]) / MODEL_FILE)
    x_test, y_test = load_split("test")
    score = accuracy(params, x_test, y_test)
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"accuracy": score}) + "\n")
    print(f"accuracy {score:.4f} on {len(y_test)} held-out digits")


if __name__ == "__main__":
    main()
