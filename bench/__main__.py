"""`python -m bench [--quick] [--only NAME ...]`: what Trainyard costs its users in time.

Prints one table per group of figures (median, spread, target, whether it is met). Quick mode
(one repeat, tiny sizes) is a smoke test for CI: it checks that every benchmark runs and says
nothing about speed. The exit status is non-zero only if a benchmark crashed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    checkpoint_cost,
    control_plane,
    frameworks,
    large_checkpoints,
    overhead,
    recovery,
    storage_path,
    sweeps,
)
from bench.common import Context, Table, console, load_average, machine_facts, markdown, print_table

#: In this order: those without Airflow first, the bursts (which can break Airflow) last.
BENCHMARKS: dict[str, Callable[[Context], list[Table]]] = {
    "storage_path": storage_path.run,
    "checkpoint_cost": checkpoint_cost.run,
    "large_checkpoints": large_checkpoints.run,
    "control_plane_parsing": control_plane.parsing,
    "overhead": overhead.run,
    "frameworks": frameworks.run,
    "recovery": recovery.run,
    "sweeps": sweeps.run,
    "control_plane_burst": control_plane.burst,
}


def airflow_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("AIRFLOW__"):
        raise argparse.ArgumentTypeError(f"expected AIRFLOW__SECTION__KEY=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat, tiny sizes (CI smoke)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument(
        "--repeats", type=int, help="repeats of the slow benchmarks (default: 3; quick: 1)"
    )
    parser.add_argument(
        "--cheap-repeats", type=int, help="repeats of the fast ones: parse, storage (default: 7)"
    )
    parser.add_argument(
        "--airflow-setting",
        type=airflow_setting,
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="start Airflow with this setting too (to try a tuning)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    workdir = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    # Importing Airflow in this process must not touch ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow-home"))
    facts = machine_facts()
    load_before = load_average()
    for name, value in facts.items():
        console.print(f"{name}: {value}", highlight=False)
    console.print(f"load average before: {load_before}\n", highlight=False)
    ctx = Context(
        workdir,
        quick=args.quick,
        repeats=args.repeats or (1 if args.quick else 3),
        cheap_repeats=args.cheap_repeats or (1 if args.quick else 7),
        airflow_settings=dict(args.airflow_setting),
    )
    tables: list[Table] = []
    crashed: list[str] = []
    started = time.perf_counter()
    try:
        for name in args.only or BENCHMARKS:
            console.rule(name)
            begun = time.perf_counter()
            try:
                results = BENCHMARKS[name](ctx)
            except Exception:
                console.print(traceback.format_exc(), highlight=False, markup=False)
                crashed.append(name)
                continue
            for table in results:
                print_table(table)
            tables.extend(results)
            console.print(f"{name}: {time.perf_counter() - begun:.0f} s", style="dim")
    finally:
        ctx.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = load_average()
    console.print(f"load average after: {load_after}", highlight=False)
    console.print(f"total: {time.perf_counter() - started:.0f} s", highlight=False)
    if args.markdown:
        header = [f"- {name}: {value}" for name, value in facts.items()]
        header += [
            f"- command: `python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}`",
            f"- Airflow settings added: {dict(args.airflow_setting) or 'none'}",
            f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
            f"- total time: {time.perf_counter() - started:.0f} s",
            "",
        ]
        args.markdown.write_text("\n".join(header + [markdown(table) for table in tables]))
    if crashed:
        console.print(f"crashed: {', '.join(crashed)}", style="red")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
