"""Write the digits data set as CSV files (plus its data expectations) for the example job.

Uses scikit-learn's bundled copy of the UCI digits, so no download is needed. The split is
fixed and stratified, so every run of the example sees the same data.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PIXELS = [f"p{i}" for i in range(64)]


def expectations() -> list[dict[str, object]]:
    """The data set's default great-expectations checks, applied to every CSV file."""
    checks: list[dict[str, object]] = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "label", "min_value": 0, "max_value": 9},
        },
    ]
    checks += [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": column, "min_value": 0, "max_value": 16},
        }
        for column in PIXELS
    ]
    return [{**check, "files": "*.csv"} for check in checks]


def write_csv(path: Path, images: list[list[float]], labels: list[int]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*PIXELS, "label"])
        for image, label in zip(images, labels, strict=True):
            writer.writerow([*(int(v) for v in image), int(label)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "datasets" / "digits",
        help="output directory (default: datasets/digits beside this script)",
    )
    args = parser.parse_args()
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.tolist(),
        digits.target.tolist(),
        test_size=0.25,
        stratify=digits.target,
        random_state=0,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "train.csv", x_train, y_train)
    write_csv(args.out / "test.csv", x_test, y_test)
    (args.out / "expectations.json").write_text(json.dumps(expectations(), indent=2) + "\n")
    print(f"wrote {len(y_train)} training and {len(y_test)} test rows to {args.out}")


if __name__ == "__main__":
    main()
