"""Score the trained model on the held-out digits; the metric goes to TRAINYARD_METRICS_FILE."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from train import DEVICE, accuracy, build_model, load_split


def main() -> None:
    torch.set_num_threads(1)
    model = build_model()
    model_file = Path(os.environ["TRAINYARD_RESULT_DIR"]) / "model.pt"
    model.load_state_dict(torch.load(model_file, weights_only=True, map_location=DEVICE))
    x_test, y_test = load_split("test")
    score = accuracy(model, x_test, y_test)
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"accuracy": score}) + "\n")
    print(f"accuracy {score:.4f} on {len(y_test)} held-out digits")


if __name__ == "__main__":
    main()
